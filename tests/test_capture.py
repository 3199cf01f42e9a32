"""capture(): callable -> Captured (pickle, local source modules, referenced modules)."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import itertools
import json
import linecache
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from deployer.capture import Captured, LocalModule, _modules_in_pickle, capture
from deployer.errors import CaptureError

TESTS_DIRECTORY = Path(__file__).resolve().parent
REPOSITORY = TESTS_DIRECTORY.parent

_cell_numbers = itertools.count(1)


def run_cell(source: str, *, keep_source: bool = False, **names: Any) -> dict[str, Any]:
    """Run `source` the way a notebook runs a cell: exec'd in a fresh `__main__` namespace.

    With keep_source the cell text goes into linecache under a made-up file name,
    which is what IPython does, so inspect.getsource can find it.
    """
    source = textwrap.dedent(source)
    filename = f"<cell-{next(_cell_numbers)}>"
    if keep_source:
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__main__", **names}
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)
    return namespace


def load(captured: Captured) -> dict[str, Any]:
    payload = cloudpickle.loads(captured.pickle)
    assert set(payload) == {"function", "metrics", "checks"}
    return payload


def paths(captured: Captured) -> list[str]:
    return [module.path for module in captured.local_modules]


def run_with_only_the_bundle(captured: Captured, call: str, directory: Path) -> dict[str, Any]:
    """Load the pickle in a fresh interpreter that sees only the shipped modules.

    `-I` keeps the tests directory, PYTHONPATH and the current directory off
    sys.path; site-packages stays (the installed requirements), and deployer's
    editable install is blocked. `call` is an expression over `function` whose
    value is printed as JSON.
    """
    bundle = directory / "bundle"
    bundle.mkdir()
    for module in captured.local_modules:
        target = bundle / module.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(module.source)
    (bundle / "function.pkl").write_bytes(captured.pickle)
    script = textwrap.dedent(
        f"""
        import json, sys
        bundle = {str(bundle)!r}
        sys.path.insert(0, bundle)
        sys.modules["deployer"] = None  # not installed where functions are deployed
        import cloudpickle
        with open(bundle + "/function.pkl", "rb") as file:
            function = cloudpickle.load(file)["function"]
        result = {call}
        loaded_from = {{
            name: module.__file__
            for name, module in sys.modules.items()
            if getattr(module, "__file__", None) and not module.__file__.startswith(sys.prefix)
            and not module.__file__.startswith(sys.base_prefix)
        }}
        print(json.dumps({{"result": result, "loaded_from": loaded_from, "path": sys.path}}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        cwd=bundle,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    outcome: dict[str, Any] = json.loads(completed.stdout)
    assert str(TESTS_DIRECTORY) not in outcome["path"]
    for name, file in outcome["loaded_from"].items():
        assert file.startswith(str(bundle)), f"{name} was loaded from {file}, outside the bundle"
    return outcome


@pytest.fixture
def fixtures_package(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the local package tests/capture_fixtures importable, as a project's own code is."""
    monkeypatch.syspath_prepend(str(TESTS_DIRECTORY))
    yield
    for name in [name for name in sys.modules if name.partition(".")[0] == "capture_fixtures"]:
        del sys.modules[name]


# --- where the function lives ----------------------------------------------------------


SCRIPT = """
import pickle
import sys

import numpy as np

import helpers
from deployer.capture import capture

OFFSET = 1.0


def predict(values: list[float]) -> list[float]:
    missing = {"missing", "n/a", "none", "null", "nan", "?", "-", "unknown", "NA", "N/A"}
    known = [value for value in values if value not in missing]
    return [float(value) + OFFSET for value in helpers.double(np.asarray(known))]


with open(sys.argv[1], "wb") as file:
    pickle.dump(capture(predict), file)
"""

HELPERS = """
def double(values):
    return values * 2
"""


def capture_in_script(directory: Path, hash_seed: str = "0") -> Captured:
    """Run a script that captures its own predict() (living in __main__) and return the result."""
    project = directory / "project"
    project.mkdir(exist_ok=True)
    (project / "score.py").write_text(SCRIPT)
    (project / "helpers.py").write_text(HELPERS)
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONHASHSEED": hash_seed}
    completed = subprocess.run(
        [sys.executable, "score.py", str(directory / "captured.pkl")],
        capture_output=True,
        text=True,
        cwd=project,
        env=environment,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    # Plain pickle: this loads the Captured record, not the function inside it.
    with open(directory / "captured.pkl", "rb") as file:
        captured: Captured = pickle.load(file)
    return captured


def test_function_in_a_scripts_main_is_pickled_by_value_with_the_module_beside_it_shipped(
    tmp_path: Path,
) -> None:
    captured = capture_in_script(tmp_path)

    assert captured.qualname == "predict"
    assert captured.signature == "(values: list[float]) -> list[float]"
    assert captured.source is not None
    assert captured.source.startswith("def predict(values: list[float])")
    assert captured.local_modules == (LocalModule("helpers", "helpers.py", HELPERS.encode()),)
    assert captured.modules == ("numpy",)
    assert captured.input_kind == "json"
    outcome = run_with_only_the_bundle(captured, "function([1, 'n/a', 2])", tmp_path)
    assert outcome["result"] == [3.0, 5.0]


def test_a_script_captured_again_in_a_process_with_other_hash_seeds_pickles_identically(
    tmp_path: Path,
) -> None:
    # String hashes differ per process; the set literal in predict() would follow them.
    first = capture_in_script(tmp_path, hash_seed="1")
    second = capture_in_script(tmp_path, hash_seed="2")
    assert first.pickle == second.pickle


def test_function_of_a_notebook_cell_is_pickled_by_value() -> None:
    cell = run_cell(
        """
        import numpy as np

        WEIGHT = 3.0

        def predict(rows):
            return float(np.sum(rows) * WEIGHT)
        """
    )

    captured = capture(cell["predict"])

    assert captured.qualname == "predict"
    assert captured.local_modules == ()
    assert captured.modules == ("numpy",)
    assert load(captured)["function"]([1.0, 2.0]) == 9.0


def test_source_comes_from_the_notebooks_cell_cache_and_is_none_without_it() -> None:
    text = """
        def predict(rows):
            return len(rows)
        """
    with_cache = run_cell(text, keep_source=True)
    without_cache = run_cell(text)

    assert capture(with_cache["predict"]).source == "def predict(rows):\n    return len(rows)\n"
    assert capture(without_cache["predict"]).source is None


def test_function_of_a_local_module_is_pickled_by_value_and_its_local_imports_are_shipped(
    fixtures_package: None,
) -> None:
    scoring = importlib.import_module("capture_fixtures.scoring")

    captured = capture(scoring.predict)

    # scoring.py itself is not shipped: predict() travels by value, so the
    # module's top-level code never runs in the cloud. What predict() uses is.
    assert paths(captured) == [
        "capture_fixtures/__init__.py",
        "capture_fixtures/features/__init__.py",
        "capture_fixtures/features/scaling.py",
        "capture_fixtures/weights.py",
    ]
    by_path = {module.path: module for module in captured.local_modules}
    assert by_path["capture_fixtures/features/__init__.py"].name == "capture_fixtures.features"
    scaling = TESTS_DIRECTORY / "capture_fixtures/features/scaling.py"
    assert by_path["capture_fixtures/features/scaling.py"].source == scaling.read_bytes()
    # numpy is imported only by features/scaling.py, two imports away from predict().
    assert captured.modules == ("numpy",)
    assert captured.qualname == "predict"
    assert load(captured)["function"]([4.0, 9.0]) == [4.0, 6.0]


def test_local_module_that_nothing_imports_is_not_shipped_nor_are_its_imports_listed(
    fixtures_package: None,
) -> None:
    importlib.import_module("capture_fixtures.unused")
    scoring = importlib.import_module("capture_fixtures.scoring")

    captured = capture(scoring.predict)

    assert "capture_fixtures/unused.py" not in paths(captured)
    assert "pandas" not in captured.modules


def test_shipped_local_modules_alone_load_the_function_in_a_clean_process(
    fixtures_package: None, tmp_path: Path
) -> None:
    scoring = importlib.import_module("capture_fixtures.scoring")

    outcome = run_with_only_the_bundle(capture(scoring.predict), "function([16.0])", tmp_path)

    assert outcome["result"] == [8.0]
    assert "capture_fixtures.features.scaling" in outcome["loaded_from"]
    assert "capture_fixtures.scoring" not in outcome["loaded_from"]


def test_instance_of_a_class_from_a_local_module_travels_by_value(
    fixtures_package: None, tmp_path: Path
) -> None:
    models = importlib.import_module("capture_fixtures.models")

    captured = capture(models.Threshold(3.0))

    assert captured.qualname == "Threshold"
    assert paths(captured) == [
        "capture_fixtures/__init__.py",
        "capture_fixtures/weights.py",
    ]
    assert captured.modules == ()
    assert load(captured)["function"]([1.0, 2.0]) == [False, True]
    outcome = run_with_only_the_bundle(captured, "function([1.0, 2.0])", tmp_path)
    assert outcome["result"] == [False, True]


def test_notebook_function_using_a_local_module_ships_it(
    fixtures_package: None, tmp_path: Path
) -> None:
    cell = run_cell(
        """
        from capture_fixtures.features import scale

        def predict(rows):
            return [scale(row) + 1 for row in rows]
        """
    )

    captured = capture(cell["predict"])

    assert paths(captured) == [
        "capture_fixtures/__init__.py",
        "capture_fixtures/features/__init__.py",
        "capture_fixtures/features/scaling.py",
    ]
    assert captured.modules == ("numpy",)
    assert run_with_only_the_bundle(captured, "function([25.0])", tmp_path)["result"] == [6.0]


def test_module_an_installed_distribution_provides_outside_site_packages_is_not_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What an editable install looks like: code in a project directory, metadata on sys.path.
    (tmp_path / "installed_elsewhere").mkdir()
    (tmp_path / "installed_elsewhere/__init__.py").write_text("VALUE = 7\n")
    metadata = tmp_path / "installed_elsewhere-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: installed-elsewhere\n")
    (metadata / "top_level.txt").write_text("installed_elsewhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "installed_elsewhere", raising=False)
    cell = run_cell(
        """
        import installed_elsewhere

        def predict(rows):
            return installed_elsewhere.VALUE
        """
    )

    captured = capture(cell["predict"])

    assert captured.local_modules == ()
    assert captured.modules == ("installed_elsewhere",)
    assert load(captured)["function"]([]) == 7


@pytest.mark.skipif(
    "deployer" not in importlib.metadata.packages_distributions(),
    reason="deployer is installed (pip install -e .) wherever it deploys from",
)
def test_shipped_helper_module_that_imports_deployer_when_it_loads_is_refused_naming_it(
    fixtures_package: None,
) -> None:
    module = importlib.import_module("capture_fixtures.calls_deploying_module")

    with pytest.raises(CaptureError) as raised:
        capture(module.predict)

    assert str(raised.value).startswith(
        "predict needs local module 'capture_fixtures.deploys_on_import' "
        "(capture_fixtures/deploys_on_import.py), which imports deployer when it loads"
    )
    assert 'if __name__ == "__main__":' in str(raised.value)


def test_helper_module_that_imports_deployer_only_when_run_or_deploying_is_shipped(
    fixtures_package: None, tmp_path: Path
) -> None:
    module = importlib.import_module("capture_fixtures.calls_module_deploying_when_run")

    captured = capture(module.predict)

    assert paths(captured) == [
        "capture_fixtures/__init__.py",
        "capture_fixtures/deploys_when_run.py",
    ]
    assert run_with_only_the_bundle(captured, "function([1.0])", tmp_path)["result"] == [2.0]


def test_function_in_a_module_that_imports_deployer_loads_where_deployer_is_absent(
    fixtures_package: None, tmp_path: Path
) -> None:
    module = importlib.import_module("capture_fixtures.deploys_on_import")

    captured = capture(module.predict)

    assert paths(captured) == []
    assert run_with_only_the_bundle(captured, "function([1.0])", tmp_path)["result"] == [1.0]


# --- what the function refers to -------------------------------------------------------


def test_closure_over_a_fitted_scikit_learn_model_lists_sklearn_and_numpy() -> None:
    cell = run_cell(
        """
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        def make_predict():
            model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])

            def predict(features):
                return model.predict_proba(np.asarray(features))[:, 1].round(6).tolist()

            return predict

        predict = make_predict()
        """
    )
    predict = cell["predict"]

    captured = capture(predict)

    assert captured.modules == ("numpy", "sklearn")
    assert captured.qualname == "make_predict.<locals>.predict"
    loaded = load(captured)["function"]
    assert loaded([[0.0], [3.0]]) == predict([[0.0], [3.0]])
    assert loaded([[0.0]])[0] < 0.5 < loaded([[3.0]])[0]


def test_callable_instance_is_named_after_its_class_with_the_call_signature() -> None:
    cell = run_cell(
        keep_source=True,
        source="""
        import pandas as pd

        class Scorer:
            def __init__(self, threshold):
                self.threshold = threshold

            def __call__(self, features: pd.DataFrame) -> pd.DataFrame:
                return features.assign(flag=features["x"] > self.threshold)

        scorer = Scorer(1.5)
        """,
    )

    captured = capture(cell["scorer"])

    assert captured.qualname == "Scorer"
    assert captured.signature.startswith("(features: pandas")
    assert captured.input_kind == "dataframe"
    # Python 3.11 finds a class's source only through a module file: then __call__'s.
    assert captured.source is not None
    assert "def __call__(self, features: pd.DataFrame)" in captured.source
    assert captured.modules == ("pandas",)
    import pandas as pd

    output = load(captured)["function"](pd.DataFrame({"x": [1.0, 2.0]}))
    assert output["flag"].tolist() == [False, True]


def test_partial_is_named_after_its_function_and_keeps_its_bound_arguments() -> None:
    cell = run_cell(
        """
        import math

        def predict(rows, scale, offset=0.0):
            return [math.floor(row * scale + offset) for row in rows]
        """
    )
    partial = functools.partial(cell["predict"], scale=10.0, offset=1.0)

    captured = capture(partial)

    assert captured.qualname == "partial(predict)"
    assert captured.signature == "(rows, *, scale=10.0, offset=1.0)"
    assert captured.requires_input is True
    assert captured.modules == ()
    assert load(captured)["function"]([0.25, 0.5]) == [3, 6]


def test_import_inside_the_function_body_is_listed() -> None:
    cell = run_cell(
        """
        def predict(rows):
            import sklearn.preprocessing

            return sklearn.preprocessing.minmax_scale(rows).tolist()
        """
    )

    captured = capture(cell["predict"])

    assert captured.modules == ("sklearn",)
    assert load(captured)["function"]([1.0, 3.0]) == [0.0, 1.0]


def test_import_inside_a_nested_function_or_comprehension_is_listed() -> None:
    cell = run_cell(
        """
        def predict(rows):
            def root(value):
                from numpy import sqrt

                return float(sqrt(value))

            return [root(row) for row in rows]
        """
    )

    captured = capture(cell["predict"])

    assert captured.modules == ("numpy",)
    assert load(captured)["function"]([4.0, 9.0]) == [2.0, 3.0]


def test_metrics_and_checks_are_pickled_with_the_function_and_their_modules_listed() -> None:
    cell = run_cell(
        """
        import numpy as np
        import pandas as pd

        def predict():
            return [1.0, 2.0, 6.0]

        metrics = {"mean": lambda out: float(np.mean(out))}
        checks = {"frame_has_rows": lambda out: len(pd.DataFrame({"value": out})) > 0}
        """
    )

    captured = capture(cell["predict"], metrics=cell["metrics"], checks=cell["checks"])

    assert captured.modules == ("numpy", "pandas")
    payload = load(captured)
    output = payload["function"]()
    assert payload["metrics"]["mean"](output) == 3.0
    assert payload["checks"]["frame_has_rows"](output) is True


def test_standard_library_and_builtins_are_not_listed() -> None:
    cell = run_cell(
        """
        import json
        import statistics
        from collections import Counter

        def predict(rows):
            import decimal

            counts = Counter(rows)
            return json.dumps({"mean": statistics.mean(rows), "n": len(counts),
                               "d": str(decimal.Decimal(1))})
        """
    )

    captured = capture(cell["predict"])

    assert captured.modules == ()
    assert json.loads(load(captured)["function"]([1, 1, 4])) == {"mean": 2, "n": 2, "d": "1"}


def test_cloudpickle_is_listed_only_when_the_function_itself_uses_it() -> None:
    plain = run_cell("def predict(rows):\n    return rows\n")
    user = run_cell(
        """
        import cloudpickle

        def predict(rows):
            return cloudpickle.loads(cloudpickle.dumps(rows))
        """
    )

    assert capture(plain["predict"]).modules == ()
    captured = capture(user["predict"])
    assert captured.modules == ("cloudpickle",)
    assert load(captured)["function"]([1, 2]) == [1, 2]


def test_module_that_is_not_installed_is_still_listed_so_requirements_can_refuse_it() -> None:
    cell = run_cell(
        """
        def predict(rows):
            import surely_not_installed_anywhere

            return surely_not_installed_anywhere.score(rows)
        """
    )

    assert capture(cell["predict"]).modules == ("surely_not_installed_anywhere",)


def test_pickle_scan_resolves_stack_global_names_pushed_from_the_memo() -> None:
    # 'sklearn.base' first appears as plain data and reaches STACK_GLOBAL only through
    # LONG_BINGET; 'numpy' is pushed once and reused through BINGET, as pickle does.
    stream = (
        b"\x80\x05"
        b"\x8c\x0csklearn.base\x94"  # memo 0: a string in the data
        b"\x8c\x05numpy\x94"  # memo 1
        b"\x8c\x04mean\x94"  # memo 2
        b"\x93\x94"  # STACK_GLOBAL numpy.mean, memo 3
        b"h\x01\x8c\x06median\x94\x93\x94"  # BINGET 1: numpy.median
        b"j\x00\x00\x00\x00\x8c\rBaseEstimator\x94\x93\x94"  # LONG_BINGET 0
        b"\x87\x94."  # TUPLE3 of the last three
    )
    import numpy as np
    from sklearn.base import BaseEstimator

    assert pickle.loads(stream) == (np.mean, np.median, BaseEstimator)

    assert _modules_in_pickle(stream) == {"numpy", "sklearn.base"}


def test_pickle_scan_finds_modules_cloudpickle_pickles_as_subimport() -> None:
    import numpy as np

    stream = cloudpickle.dumps({"module": np, "submodule": np.linalg}, protocol=5)

    assert _modules_in_pickle(stream) == {"numpy", "numpy.linalg"}


# --- determinism -----------------------------------------------------------------------


def test_capturing_the_same_callable_twice_gives_identical_bytes() -> None:
    cell = run_cell(
        """
        import numpy as np
        from sklearn.linear_model import LinearRegression

        model = LinearRegression().fit([[0.0], [1.0]], [1.0, 3.0])
        ALLOWED = {"a", "b", "c"}

        def predict(rows):
            return [float(model.predict(np.asarray([[row]]))[0]) for row in rows
                    if row not in {"x", "y"}]

        class Scorer:
            def __call__(self, rows):
                return [row in ALLOWED for row in rows]
        """
    )
    metrics = {"count": lambda out: len(out)}

    for function in (cell["predict"], cell["Scorer"](), functools.partial(cell["predict"])):
        first = capture(function, metrics=metrics)
        second = capture(function, metrics=metrics)
        assert first.pickle == second.pickle
        assert first == second


# --- the input contract ----------------------------------------------------------------


@pytest.mark.parametrize(
    "definition, takes_input, requires_input, input_kind",
    [
        ("def predict(features): ...", True, True, "dataframe"),
        ("def predict(features: pd.DataFrame): ...", True, True, "dataframe"),
        ("def predict(features: 'pd.DataFrame | None' = None): ...", True, False, "dataframe"),
        ("def predict(features: Optional[pd.DataFrame]): ...", True, True, "dataframe"),
        ("def predict(payload: dict) -> dict: ...", True, True, "json"),
        ("def predict(payload: 'dict[str, float]'): ...", True, True, "json"),
        ("def predict(payload=None): ...", True, False, "dataframe"),
        ("def predict(*rows): ...", True, False, "dataframe"),
        ("def predict(): ...", False, False, "json"),
        ("def predict(*, limit=3): ...", False, False, "json"),
    ],
)
def test_input_contract_follows_the_first_positional_parameter(
    definition: str, takes_input: bool, requires_input: bool, input_kind: str
) -> None:
    cell = run_cell(f"import pandas as pd\nfrom typing import Optional\n{definition}\n")

    captured = capture(cell["predict"])

    assert (captured.takes_input, captured.requires_input, captured.input_kind) == (
        takes_input,
        requires_input,
        input_kind,
    )
    assert captured.signature == str(inspect.signature(cell["predict"]))


def test_string_annotations_are_resolved_through_the_functions_module_names() -> None:
    cell = run_cell(
        """
        from __future__ import annotations
        import pandas
        Frame = pandas.DataFrame

        def predict(features: Frame) -> Frame:
            return features
        """
    )

    assert capture(cell["predict"]).input_kind == "dataframe"


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("value, shown", [(42, "42 (a int)"), ("predict", "'predict' (a str)")])
def test_something_not_callable_is_refused_naming_it_and_what_is_accepted(
    value: object, shown: str
) -> None:
    with pytest.raises(CaptureError) as raised:
        capture(value)

    message = str(raised.value)
    assert shown in message
    assert "not callable" in message and "functools.partial" in message


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"metrics": {"mean": 0.5}}, "metric 'mean' is 0.5 (a float), not a callable"),
        ({"checks": {"in_range": True}}, "check 'in_range' is True (a bool), not a callable"),
        ({"metrics": [lambda out: 1]}, "metrics must be a mapping of name to callable"),
        ({"checks": {1: lambda out: True}}, "check names must be strings"),
    ],
)
def test_metric_or_check_that_is_not_a_named_callable_is_refused(
    options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(CaptureError, match="lambda out") as raised:
        capture(lambda: None, **options)

    assert fragment in str(raised.value)


@pytest.fixture
def open_file(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "data.txt").write_text("rows\n")
    with open(tmp_path / "data.txt") as file:
        yield file


@pytest.fixture
def open_socket() -> Iterator[socket.socket]:
    with socket.socket() as connection:
        yield connection


@pytest.mark.parametrize(
    "kind, type_name, advice",
    [
        ("file", "_io.TextIOWrapper", "open it inside the function instead"),
        ("lock", "_thread.lock", "create it inside the function instead"),
        ("socket", "socket.socket", "open the connection inside the function instead"),
        ("generator", "generator", "turn it into a list before deploying"),
    ],
)
def test_unpicklable_global_is_named_with_its_type_and_what_to_do(
    kind: str, type_name: str, advice: str, open_file: Any, open_socket: socket.socket
) -> None:
    values = {
        "file": open_file,
        "lock": threading.Lock(),
        "socket": open_socket,
        "generator": (row for row in range(3)),
    }
    cell = run_cell(
        """
        def predict(rows):
            return [resource for _ in rows]
        """,
        resource=values[kind],
    )

    with pytest.raises(CaptureError) as raised:
        capture(cell["predict"])

    assert str(raised.value).startswith(
        f"cannot pickle 'resource' (a {type_name}) captured by predict(): {advice}"
    )
    assert raised.value.__cause__ is not None


def test_unpicklable_closure_variable_is_named() -> None:
    cell = run_cell(
        """
        import threading

        def make_predict():
            guard = threading.Lock()

            def predict(rows):
                with guard:
                    return rows

            return predict
        """
    )

    with pytest.raises(
        CaptureError,
        match=r"^cannot pickle 'guard' \(a _thread.lock\) captured "
        r"by make_predict.<locals>.predict\(\): create it inside the function",
    ):
        capture(cell["make_predict"]())


def test_unpicklable_variable_of_a_helper_names_the_helper_and_its_caller(
    open_file: Any,
) -> None:
    cell = run_cell(
        """
        def read_rows():
            return db.readlines()

        def predict(rows):
            return read_rows()
        """,
        db=open_file,
    )

    with pytest.raises(CaptureError) as raised:
        capture(cell["predict"])

    assert str(raised.value).startswith(
        "cannot pickle 'db' (a _io.TextIOWrapper) captured by read_rows(), which predict() "
        "uses: open it inside the function instead"
    )


def test_unpicklable_attribute_of_a_callable_instance_is_named() -> None:
    cell = run_cell(
        """
        import threading

        class Scorer:
            def __init__(self):
                self.settings = {"lock": threading.Lock()}

            def __call__(self, rows):
                return rows
        """
    )

    with pytest.raises(CaptureError) as raised:
        capture(cell["Scorer"]())

    assert str(raised.value).startswith(
        "cannot pickle \"self.settings['lock']\" (a _thread.lock) captured by the Scorer "
        "instance: create it inside the function"
    )


@pytest.mark.parametrize(
    "members, message",
    [
        (
            "guard = threading.Lock()\n    def __call__(self, rows):\n        return rows",
            "cannot pickle 'Scorer.guard' (a _thread.lock) captured by the Scorer instance: ",
        ),
        (
            "def __call__(self, rows):\n        with GUARD:\n            return rows",
            "cannot pickle 'GUARD' (a _thread.lock) captured by Scorer.__call__(): ",
        ),
    ],
)
def test_unpicklable_member_of_a_notebook_class_is_named(members: str, message: str) -> None:
    cell = run_cell(
        "import threading\nGUARD = threading.Lock()\nclass Scorer:\n    " + members + "\n"
    )

    with pytest.raises(CaptureError) as raised:
        capture(cell["Scorer"]())

    assert str(raised.value).startswith(message)


def test_unpicklable_bound_argument_of_a_partial_is_named() -> None:
    cell = run_cell("def predict(rows, guard):\n    return rows\n")

    with pytest.raises(CaptureError) as raised:
        capture(functools.partial(cell["predict"], guard=threading.RLock()))

    assert str(raised.value).startswith(
        "cannot pickle 'guard' (a _thread.RLock) captured by partial(predict): "
    )


def test_unpicklable_default_argument_is_named(open_socket: socket.socket) -> None:
    cell = run_cell("def predict(rows, connection=None):\n    return rows\n")
    cell["predict"].__defaults__ = (open_socket,)

    with pytest.raises(CaptureError, match="^cannot pickle 'connection' \\(a socket.socket\\)"):
        capture(cell["predict"])


def test_unpicklable_capture_of_a_metric_names_the_metric() -> None:
    cell = run_cell(
        """
        def predict():
            return [1]

        metrics = {"rows": lambda out: guard.locked() or len(out)}
        """,
        guard=threading.Lock(),
    )

    with pytest.raises(CaptureError) as raised:
        capture(cell["predict"], metrics=cell["metrics"])

    assert str(raised.value).startswith(
        "cannot pickle 'guard' (a _thread.lock) captured by metric 'rows': "
    )


def test_unpicklable_callable_itself_is_refused_without_a_raw_pickle_error() -> None:
    guard = threading.Lock()

    with pytest.raises(CaptureError) as raised:
        capture(guard.acquire)

    assert str(raised.value).startswith(
        "cannot pickle 'self' (a _thread.lock) captured by lock.acquire(): create it inside"
    )
    assert isinstance(raised.value.__cause__, TypeError)


# --- import cost -----------------------------------------------------------------------


def test_importing_capture_does_not_import_pandas_pyarrow_or_cloudpickle() -> None:
    script = (
        "import sys, deployer.capture; "
        "print([m for m in ('pandas', 'pyarrow', 'cloudpickle', 'numpy') if m in sys.modules])"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
