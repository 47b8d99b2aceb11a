"""requirements.txt parsing (shared with the artifacts checker) and the server's satisfaction check."""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from modelport.domain.errors import BadRequest
from modelport.domain.requirements import parse_requirements
from modelport.serving.environment import prepare, unsatisfied
from modelport.serving.errors import ModelLoadError


def test_plain_requirements_parse() -> None:
    text = (
        "# trained with\n"
        "scikit-learn==1.5.2  # the classic\n"
        "\n"
        "numpy>=1.24,<3 ; python_version >= '3.9'\n"
        "pandas[performance]~=2.2 \\\n"
        "  # continued\n"
    )
    reqs = parse_requirements(text)
    assert [r.name for r in reqs] == ["scikit-learn", "numpy", "pandas"]
    assert str(reqs[0].specifier) == "==1.5.2"
    assert reqs[2].extras == {"performance"}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("-e .", "editable"),
        ("--editable git+https://x/y", "editable"),
        ("-r other.txt", "including other files"),
        ("-c constraints.txt", "including other files"),
        ("--index-url https://evil.example/simple", "options"),
        ("--extra-index-url=https://evil.example", "options"),
        ("--trusted-host evil.example", "options"),
        ("https://example.com/pkg-1.0.tar.gz", "URLs"),
        ("git+https://github.com/x/y.git", "URLs"),
        ("pkg @ https://example.com/pkg.whl", "URLs"),
        ("./local/pkg", "paths"),
        ("/abs/pkg.whl", "paths"),
        ("pkg-1.0-py3-none-any.whl", "paths"),
        ("scikit-learn===", "not a valid requirement"),
    ],
)
def test_refused_lines_name_the_line(line: str, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_requirements(f"numpy\n{line}\n")
    assert info.value.code == "bad_requirements"
    assert "line 2" in info.value.message
    assert words in info.value.message


def test_duplicate_names_refused() -> None:
    with pytest.raises(BadRequest, match="already listed on line 1"):
        parse_requirements("Scikit_Learn==1.0\nscikit-learn==1.1\n")


def test_unsatisfied_uses_installed_versions() -> None:
    sklearn = metadata.version("scikit-learn")
    reqs = [
        Requirement(f"scikit-learn=={sklearn}"),
        Requirement("scikit-learn==0.0.1"),
        Requirement("surely-not-installed-modelport-pkg"),
        Requirement("numpy>=1 ; python_version < '3'"),  # marker false: ignored
    ]
    missing = [reason for _, reason in unsatisfied(reqs)]
    assert missing == [
        f"scikit-learn==0.0.1 (server has {sklearn})",
        "surely-not-installed-modelport-pkg (not installed)",
    ]


def test_satisfied_file_installs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(f"scikit-learn=={metadata.version('scikit-learn')}\nnumpy\n")
    env = prepare(path, tmp_path / "cache")
    assert env.installed == [] and env.target is None
    assert not (tmp_path / "cache" / "envs").exists()


def test_bad_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("numpy\n--index-url https://evil.example/simple\n")
    with pytest.raises(ModelLoadError, match="line 2"):
        prepare(path, tmp_path / "cache")
