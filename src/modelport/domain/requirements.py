"""``requirements.txt`` of a model version: parsed and checked, no I/O.

Shared by the artifacts checker (refuses a bad file at upload time) and the model server (which
installs what the file asks for). Only plain PEP 508 requirements are accepted: ``name[extras]
specifier ; marker``. Anything that could make an install reach outside the package index or the
file itself (URLs, local paths, editable installs, ``-r``/``-c`` includes, ``--index-url`` or any
other option) is refused with a ``bad_requirements`` BadRequest naming the line.
"""

from __future__ import annotations

import hashlib
import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modelport.domain.errors import BadRequest

CODE = "bad_requirements"

_COMMENT = re.compile(r"(^|\s)#.*$")
# Something that looks like a path or a URL rather than a project name.
_PATHLIKE = re.compile(r"^(\.{1,2}[/\\]|[/\\~]|[A-Za-z]:[/\\])|[/\\]|\.(whl|zip|tar\.gz|tgz|tar\.bz2)$")


def _refuse(lineno: int, line: str, why: str) -> BadRequest:
    return BadRequest(f"requirements.txt line {lineno}: {line!r}: {why}", code=CODE)


def parse_requirements(text: str) -> list[Requirement]:
    """Parse the text of a requirements file; raise BadRequest(code='bad_requirements') on any bad line.

    Comments, blank lines and trailing ``# ...`` comments are ignored; backslash line continuations
    are joined. Each remaining line must be a PEP 508 requirement naming a project on the index.
    """
    requirements: list[Requirement] = []
    seen: dict[str, int] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        lineno = index + 1
        raw = lines[index]
        index += 1
        while raw.rstrip().endswith("\\") and index < len(lines):
            raw = raw.rstrip()[:-1] + " " + lines[index]
            index += 1
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            option = line.split()[0].split("=")[0]
            if option in ("-e", "--editable"):
                raise _refuse(lineno, line, "editable installs (-e) are not allowed")
            if option in ("-r", "--requirement", "-c", "--constraint"):
                raise _refuse(lineno, line, f"including other files ({option}) is not allowed")
            raise _refuse(lineno, line, f"options ({option}) are not allowed; list one package per line")
        if "://" in line or line.startswith("file:"):
            raise _refuse(lineno, line, "URLs are not allowed; name a package and a version instead")
        name_part = re.split(r"[\s;\[<>=!~@]", line, maxsplit=1)[0]
        if _PATHLIKE.search(name_part):
            raise _refuse(lineno, line, "local paths and archive files are not allowed")
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise _refuse(lineno, line, f"not a valid requirement ({str(exc).splitlines()[0]})") from None
        if requirement.url:
            raise _refuse(lineno, line, "direct references (name @ url) are not allowed")
        key = canonical_name(requirement.name)
        if key in seen:
            raise _refuse(lineno, line, f"{requirement.name} is already listed on line {seen[key]}")
        seen[key] = lineno
        requirements.append(requirement)
    return requirements


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name (``Scikit_Learn`` -> ``scikit-learn``)."""
    return str(canonicalize_name(name))


def requirements_sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()
