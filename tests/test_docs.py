"""The `>>>` examples of every docstring in tfft and experiments run, and say what they show.

Each module's examples run with the module's own names plus `tfft`, `np`, `keras`, `tf`
and `kt` (as a reader of the docs would have them), with `ELLIPSIS` and
`NORMALIZE_WHITESPACE`. An example that builds a model uses tiny inputs, so this file stays
fast.
"""

import doctest
import importlib
import pkgutil

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf

import experiments
import tfft


def _modules():
    names = []
    for package in (tfft, experiments):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.append(info.name)
    return sorted(n for n in names if n != "experiments.quiet")  # quiet rewires stderr on import only


def _examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    globs = dict(vars(module), tfft=tfft, np=np, keras=keras, tf=tf, kt=kt)
    return [test for test in finder.find(module, name, globs=globs) if test.examples]


MODULES = [name for name in _modules() if _examples(name)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(name):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted and not failed, f"{failed} of {attempted} examples in {name} failed (see the output above)"


def test_most_modules_have_examples():
    assert len(MODULES) >= 20
