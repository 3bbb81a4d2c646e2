"""Tests of tfft.find_learning_rate (the learning-rate range test)."""

import keras
import numpy as np
import pytest

import tfft
from tiny import tiny_cnn, two_class_images
from tfft import features as features_lib
from tfft import lr_finder


def tiny_model(freeze="none"):
    return tfft.build_model(tiny_cnn(), num_classes=2, weights=None, freeze=freeze, dropout=0.2)


def tiny_data(n=64):
    return two_class_images(n)


def test_weights_and_optimizer_state_are_restored():
    model = tiny_model()
    tfft.compile_model(model, optimizer="adam", learning_rate=1e-3)
    x, y = tiny_data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # the optimizer now has state
    weights = [w.copy() for w in model.get_weights()]
    opt_state = [np.array(v) for v in model.optimizer.variables]

    result = tfft.find_learning_rate(model, (x, y), num_steps=30, batch_size=16, verbose=0)

    assert len(result.learning_rates) == len(result.losses) == len(result.smoothed_losses) > 5
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)  # BatchNorm statistics and seeds included
    for before, after in zip(opt_state, model.optimizer.variables):
        np.testing.assert_array_equal(before, np.array(after))
    assert model.optimizer.__class__.__name__ == "Adam"


def test_rates_rise_exponentially_and_divergence_stops_the_test():
    model = tiny_model()
    x, y = tiny_data()
    result = tfft.find_learning_rate(model, (x, y), min_lr=1e-5, max_lr=1e4, num_steps=60, optimizer="sgd",
                                     batch_size=16, verbose=0)
    rates = np.asarray(result.learning_rates)
    ratios = rates[1:] / rates[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)
    assert rates[0] == pytest.approx(1e-5)
    assert result.diverged and len(rates) < 60
    assert 1e-5 <= result.suggestion <= rates[-1]


def test_suggestions_on_a_known_curve():
    lrs = np.logspace(-6, 0, 61)
    # loss falls fastest at 1e-3 (a logistic step in log10 rate), then blows up past 1e-1
    loss = 2.0 - 1.5 / (1 + np.exp(-3 * (np.log10(lrs) + 3))) + np.where(lrs > 1e-1, 50 * (lrs - 1e-1), 0.0)
    steepest, minimum = lr_finder.suggest(lrs, loss)
    assert steepest == pytest.approx(1e-3, rel=0.3)
    assert minimum == pytest.approx(lrs[np.argmin(loss)] / 10)
    assert lr_finder.suggest(lrs[:3], loss[:3]) == (None, None)


def test_frozen_backbone_uses_cached_features_and_plots(tmp_path):
    model = tiny_model(freeze="backbone")
    tfft.compile_model(model)
    x, y = tiny_data()
    misses = features_lib.default_store.misses
    result = tfft.find_learning_rate(model, tfft.data.from_arrays(x, y, batch_size=16), num_steps=20,
                                     method="minimum", verbose=0)
    assert features_lib.default_store.misses == misses + 1
    assert result.suggestion == result.minimum_lr
    fig = result.plot(str(tmp_path / "lr.png"))
    assert (tmp_path / "lr.png").stat().st_size > 1000 and fig.axes[0].get_xscale() == "log"


def test_range_narrows_a_search():
    result = lr_finder.LRFinderResult([], [], [], 3e-3, 3e-3, 1e-3, False)
    low, high = result.search_range()
    hypermodel = tfft.TransferHyperModel(tiny_model().get_layer("backbone"), num_classes=2, weights=None,
                                         search_space={"learning_rate": (low, high)})
    assert hypermodel.search_space["learning_rate"] == pytest.approx((1e-3, 9e-3))


def test_errors_name_the_fix():
    model = tiny_model(freeze="backbone")
    x, y = tiny_data(8)
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        tfft.find_learning_rate(model, (x, y), min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="method"):
        tfft.find_learning_rate(model, (x, y), method="valley")
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        tfft.find_learning_rate(model, x)
    with pytest.raises(ValueError, match="no trainable weights"):
        tfft.find_learning_rate(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, trainable=False)]),
                                (np.zeros((4, 3)), np.zeros(4)), loss="mse", cache_features=False)
    with pytest.raises(ValueError, match="num_steps"):
        lr_finder.LRFinderResult([], [], [], None, None, None, False).search_range()
