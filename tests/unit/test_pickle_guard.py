"""A model file can never run code: hostile files are REJECTED at upload and refused at load.

Every case of ``tests/support/malicious.py`` would create a marker file if its payload ran. Each
must (1) be rejected by the upload check with ``unsafe_model`` naming the global (or
``unverifiable_model`` for the desynchronisation tricks), and (2) forced onto the model server's
loader directly, bypassing the API, be refused with a ModelLoadError that names the global, no
traceback; the marker never appears and no audited process or file event mentions it.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from modelport.artifacts.checks import inspect_model
from modelport.domain.errors import BadRequest
from modelport.serving.errors import ModelLoadError
from modelport.serving.runtime import load_model
from modelport.settings import Settings
from tests.support.malicious import FAMILIES_MIN, malicious_files

SETTINGS = Settings(max_upload_bytes=50 * 1024 * 1024)
_AUDITED: list[tuple[str, tuple[object, ...]]] = []
_WATCH: list[str] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _WATCH and event in ("open", "os.system", "subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork",
                            "shutil.copyfile", "exec", "compile", "pty.spawn") and any(
            _WATCH[0] in repr(arg) for arg in args):
        _AUDITED.append((event, args))


sys.addaudithook(_audit)
CASES = malicious_files("@MARKER@")  # for the ids; each test rebuilds its case for its own marker


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def test_the_corpus_has_every_family() -> None:
    families = {case.family.split(" ")[0] for case in CASES}
    assert len(CASES) >= FAMILIES_MIN and len(families) >= FAMILIES_MIN, len(families)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case.family for case in CASES])
def test_hostile_file_is_rejected_at_upload_and_refused_at_load(index: int, marker: Path, tmp_path: Path) -> None:
    case = malicious_files(str(marker))[index]
    with pytest.raises(BadRequest) as rejected:
        inspect_model(io.BytesIO(case.data), SETTINGS)
    if case.named:
        assert rejected.value.code == "unsafe_model", rejected.value.message
        assert case.named in rejected.value.message
    else:
        assert rejected.value.code in ("unsafe_model", "unverifiable_model"), rejected.value.message

    path = tmp_path / "model.joblib"
    path.write_bytes(case.data)
    _WATCH[:] = [str(marker)]
    try:
        with pytest.raises(ModelLoadError) as refused:
            load_model(path, "m")
    finally:
        _WATCH.clear()
    message = refused.value.message
    assert message.startswith("refused to load"), message
    if case.named:
        assert case.named in message and "not on modelport's allow-list" in message
    assert "Traceback" not in message
    assert not marker.exists()
    assert _AUDITED == []


class OwnersTransformer:
    """An owner's own class: not on the list, loadable only when the version trusts it."""

    def predict(self, x: object) -> list[int]:
        return [1]


def test_an_owners_class_needs_the_versions_own_trust_list(tmp_path: Path) -> None:
    import pickle

    from modelport.domain.model_server import ServerConfig
    from modelport.domain.pickle_policy import PicklePolicy

    name = f"{__name__}.OwnersTransformer"
    data = pickle.dumps(OwnersTransformer(), protocol=4)
    with pytest.raises(BadRequest) as rejected:
        inspect_model(io.BytesIO(data), SETTINGS)
    assert rejected.value.code == "unsafe_model" and name in rejected.value.message
    config = ServerConfig.from_env({"MODEL_URI": "m.pkl", "MODEL_TRUSTED_GLOBALS": name})
    policy = PicklePolicy.for_version((), config.trusted())
    inspect_model(io.BytesIO(data), SETTINGS, policy)
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    assert load_model(path, "m", policy=policy).warnings == [f"trusted by owner: {name}"]
    with pytest.raises(ModelLoadError, match="OwnersTransformer"):
        load_model(path, "m")  # another version (no trust list) does not inherit it


@pytest.mark.parametrize("entry", ["builtins.eval", "os.system", "posix.system", "subprocess.Popen", "eval",
                                   "importlib.import_module", "mypkg.*", "functools.partial"])
def test_no_trust_list_can_name_a_general_purpose_callable(entry: str) -> None:
    from modelport.api.schemas import VersionCreate
    from modelport.domain.model_server import ServerConfig

    with pytest.raises(ValueError, match="trusted global"):
        VersionCreate(trusted_globals=[entry])
    with pytest.raises(ValueError, match="MODEL_TRUSTED_GLOBALS"):
        ServerConfig.from_env({"MODEL_URI": "m.pkl", "MODEL_TRUSTED_GLOBALS": entry})


def test_known_packages_in_requirements_add_their_estimators_only() -> None:
    from modelport.domain.pickle_policy import PicklePolicy

    plain, boosted = PicklePolicy.for_version(), PicklePolicy.for_version(["XGBoost", "requests"])
    assert not plain.admits("xgboost.sklearn", "XGBClassifier")
    assert boosted.admits("xgboost.sklearn", "XGBClassifier") and boosted.packages == ("xgboost",)
    assert not boosted.admits("xgboost.core", "_deprecate_positional_args")
    assert boosted.allowed - plain.allowed == {(m, n) for m, n in boosted.allowed if m.startswith("xgboost.")}


@pytest.mark.parametrize("index", range(6))
def test_hostile_skops_file_is_rejected_at_upload_and_refused_at_load(index: int, marker: Path,
                                                                     tmp_path: Path) -> None:
    from tests.support.malicious import skops_files

    case = skops_files(str(marker))[index]
    with pytest.raises(BadRequest) as rejected:
        inspect_model(io.BytesIO(case.data), SETTINGS)
    assert rejected.value.code == ("unsafe_model" if case.named else "unverifiable_model"), rejected.value.message
    path = tmp_path / "model.skops"
    path.write_bytes(case.data)
    with pytest.raises(ModelLoadError) as refused:
        load_model(path, "m")
    assert refused.value.message.startswith("refused to load"), refused.value.message
    if case.named:
        assert case.named in rejected.value.message and case.named in refused.value.message
    assert not marker.exists()
