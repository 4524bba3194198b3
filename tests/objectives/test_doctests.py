"""The docstring examples of the losses run as written (CI runs ``pytest`` on ``tests/`` only)."""

import doctest
import importlib
import pkgutil

import pytest

import torchrl_serl.objectives

MODULES = sorted(f"torchrl_serl.objectives.{m.name}" for m in pkgutil.iter_modules(torchrl_serl.objectives.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, "".join(report)
