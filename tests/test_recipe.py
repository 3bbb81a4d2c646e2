"""The recipe core: fine_tune's defaults are the rule, specs are checked before training, the
feature cache trains the model that recomputing would, and a tuning trial is a fine_tune run."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfft
from tiny import tiny_cnn
from tfft import features as features_lib
from tfft import order, tuning
from tfft.recipe import Recipe, default_recipe

SHAPE = (32, 32, 3)


def arrays(n=48, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % classes).astype("int64")
    x = (rng.random((n,) + SHAPE) * 100 + y[:, None, None, None] * 100).astype("float32")
    return x, y


def lite0(dropout=0.2, seed=3):
    """EfficientNet-Lite0 (random weights) has stochastic depth inside: a frozen backbone must run it off."""
    keras.utils.set_random_seed(seed)
    return tfft.build_model("efficientnet_lite0", num_classes=2, weights=None, input_shape=SHAPE, dropout=dropout)


# --------------------------------------------------------------------------------------------
# The rule is the default
# --------------------------------------------------------------------------------------------


def test_fine_tune_alone_runs_the_rule_and_says_so(capsys):
    x, y = arrays(n=24)
    model = lite0()
    result = tfft.fine_tune(model, (x, y), (x, y), verbose=0)
    expected = default_recipe(modality="image", examples=24, cacheable=True)
    assert result.recipe == expected
    head, finetune = result.phases
    assert head.cached_features and not finetune.cached_features
    assert head.final_epoch == expected.head_epochs and finetune.final_epoch - head.final_epoch == 10
    # The fine-tune phase ran the rule's optimizer and schedule, at the rule's rate.
    assert type(model.optimizer) is keras.optimizers.Adam and tfft.optim.uses_schedule(model.optimizer)
    assert float(model.optimizer._learning_rate.initial_learning_rate) == expected.finetune_learning_rate
    out = capsys.readouterr().out
    assert "recipe for image data (24 training examples): head 20 epochs" in out
    assert "augment default (fine-tune phases)" in out and "label smoothing 0.1" in out
    assert "set by you" not in out


def test_text_models_get_the_text_rule(capsys):
    keras_hub = pytest.importorskip("keras_hub")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "a"]
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=1, num_heads=1, hidden_dim=4,
                                             intermediate_dim=8, max_sequence_length=8)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(keras_hub.models.BertTokenizer(vocabulary=vocab),
                                                                   sequence_length=6)
    model = tfft.build_model(backbone, preprocessor=preprocessor, num_classes=2, weights=None)
    texts, labels = ["a good film", "a bad film"] * 4, np.array([1, 0] * 4)
    result = tfft.fine_tune(model, (texts, labels), (texts, labels), verbose=0)
    assert result.recipe == default_recipe(modality="text", examples=8)
    assert type(model.optimizer) is keras.optimizers.AdamW and float(model.optimizer.weight_decay) == 0.01
    assert not result.recipe.augment and "recipe for text data (8 training examples)" in capsys.readouterr().out


def test_keywords_override_the_rule_and_a_recipe_object_is_the_same(capsys):
    x, y = arrays(n=16)
    a = tfft.fine_tune(lite0(), (x, y), head_epochs=1, finetune_epochs=1, finetune_learning_rate=3e-4,
                       augment=False, verbose=0)
    assert "set by you: head_epochs=1, finetune_epochs=1, finetune_learning_rate=0.0003, augment=False" in \
        capsys.readouterr().out
    recipe = Recipe(head_epochs=1, finetune_epochs=1, finetune_learning_rate=3e-4, augment=False)
    b = tfft.fine_tune(lite0(), (x, y), recipe=recipe.to_dict(), verbose=0)
    assert a.recipe == b.recipe and a.history["loss"] == pytest.approx(b.history["loss"], rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(unfreeze="top3"), r"unfreeze='top3' does not fit this backbone: Freeze spec 'top3' is not understood"),
    (dict(finetune_optimizer="adamm"), r"finetune_optimizer='adamm' is not an optimizer\. Did you mean 'adam'"),
    (dict(head_schedule="cosin"), r"head_schedule='cosin' is not a schedule\. Did you mean 'cosine'"),
    (dict(augment="flipp"), r"Unknown augmentation 'flipp'"),
    (dict(warmup_fraction=1.5), r"warmup_fraction=1\.5 must be a fraction in \[0, 1\)"),
])
def test_a_spec_that_cannot_work_is_refused_before_anything_trains_or_is_written(tmp_path, kwargs, message):
    x, y = arrays(n=8)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        tfft.fine_tune(lite0(), (x, y), workdir=str(workdir), verbose=0, **kwargs)
    assert not workdir.exists()


# --------------------------------------------------------------------------------------------
# The feature cache changes nothing but the time
# --------------------------------------------------------------------------------------------


def _head_phase(dataset, cache, *, validation=None, epochs=3, seed=None):
    model = lite0()
    validation = dataset.take(2) if validation is None else validation
    result = tfft.fine_tune(model, dataset, validation, head_epochs=epochs, finetune_epochs=0,
                            cache_features=cache, verbose=0, seed=seed, feature_store=features_lib.FeatureStore())
    assert result.phases[0].cached_features is cache
    return model


def test_cached_and_recomputed_head_phases_agree_on_a_fixed_order():
    x, y = arrays()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # six batches, the same order every epoch
    probe = x[:16]
    recomputed, cached = (_head_phase(ds, cache).predict(probe, verbose=0) for cache in (False, True))
    np.testing.assert_allclose(cached, recomputed, atol=1e-3)
    assert np.abs(cached - 0.5).max() > 0.01  # the head did learn something


def test_cached_features_follow_a_tfft_datasets_epoch_order():
    """A tfft loader's training split reshuffles each epoch (seeded); the cache serves each
    epoch's features in exactly that order, so the models agree as on a fixed order."""
    x, y = arrays()
    bundle = tfft.data.from_arrays(x, y, batch_size=8, seed=5, validation_split=0.25)
    assert order.reshuffles(bundle.train)
    recomputed, cached = (_head_phase(bundle.train, cache, validation=bundle.validation).predict(x[:16], verbose=0)
                          for cache in (False, True))
    np.testing.assert_allclose(cached, recomputed, atol=1e-3)


def test_final_metrics_after_a_cached_head_phase_are_the_whole_models():
    """The head scores the cached validation features (no second backbone pass): the numbers
    are those of the whole model on the images, and the model comes back compiled with them."""
    x, y = arrays()
    bundle = tfft.data.from_arrays(x, y, batch_size=8, seed=5, validation_split=0.25)
    model = lite0()
    result = tfft.fine_tune(model, bundle.train, bundle.validation, head_epochs=2, finetune_epochs=0,
                            feature_store=features_lib.FeatureStore(), verbose=0)
    assert result.phases[-1].cached_features
    scores = model.evaluate(bundle.validation, return_dict=True, verbose=0)
    assert set(result.metrics) == {f"val_{k}" for k in scores}
    for name, value in scores.items():
        assert result.metrics[f"val_{name}"] == pytest.approx(value, abs=1e-5)


def test_features_of_a_dataset_that_reshuffles_by_itself_reshuffle_each_epoch():
    x, y = arrays(n=16)
    ids = np.arange(16).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, ids)).shuffle(16, seed=1).batch(4)  # reshuffles each epoch
    store = features_lib.FeatureStore()
    model = lite0()
    extractor, _ = features_lib.split_at_features(model)
    served = store.dataset(extractor, ds, seed=7)
    pin = order.EpochSeed()

    def epoch(e):
        pin.on_epoch_begin(e)
        return np.concatenate([labels.numpy() for _, labels in served])

    try:
        first, second, again = epoch(0), epoch(1), epoch(0)
    finally:
        pin.on_train_end()
    assert sorted(first) == list(range(16)) and list(first) != list(second)  # every example, a new order
    np.testing.assert_array_equal(first, again)  # the order of epoch e is a function of (seed, e): resumable
    fixed = store.dataset(extractor, tf.data.Dataset.from_tensor_slices((x, ids)).batch(4))
    assert list(np.concatenate([labels.numpy() for _, labels in fixed])) == list(range(16))


# --------------------------------------------------------------------------------------------
# A trial is fine_tune
# --------------------------------------------------------------------------------------------


def tiny_backbone():
    return tiny_cnn(seed=11)


def test_retraining_the_best_trial_with_fine_tune_reproduces_its_score(tmp_path):
    x, y = arrays(n=40)
    bundle = tfft.data.from_arrays(x, y, validation_split=0.25, batch_size=8, seed=0)
    backbone = tiny_backbone()
    space = {"unfreeze": ["none", "backbone"], "learning_rate": [3e-3, 1e-2], "batch_size": [4, 8],
             "head_epochs": 2, "finetune_epochs": 2, "dropout": [0.0, 0.3], "head_units": [0, 8],
             "optimizer": "adam", "weight_decay": 0.0, "warmup_fraction": [0.0, 0.25], "label_smoothing": 0.1}
    hypermodel = tuning.TransferHyperModel(backbone, num_classes=2, weights=None, seed=4, search_space=space)
    tuner = tuning.make_tuner(hypermodel, algorithm="random", max_trials=4, seed=2, directory=str(tmp_path),
                              project_name="search")
    tuner.search(bundle.train, validation_data=bundle.validation, verbose=0)
    best = json.loads((tmp_path / "search" / "best_config.json").read_text())
    assert best["monitor"] == "val_accuracy" and "seed" in best

    scores = []
    for trial in tuning.list_trials(tuner):  # every trial retrains to its score, two-phase ones included
        config = hypermodel.trial_config(trial.hyperparameters)
        copy = keras.models.clone_model(backbone)  # a two-phase run trains its backbone: each retrains a copy
        copy.set_weights(backbone.get_weights())
        seed = tuning.trial_seed(4, trial.trial_id)
        keras.utils.set_random_seed(seed)
        model = tfft.build_model(copy, num_classes=2, weights=None, dropout=config.get("dropout"),
                                 head_units=tuple(config.get("head_units", ())))
        result = tfft.fine_tune(model, bundle.train, bundle.validation, recipe=config, seed=seed, verbose=0)
        scores.append((max(result.history["val_accuracy"]), trial.score, config["unfreeze"]))
    for retrained, score, _ in scores:
        assert retrained == pytest.approx(score, abs=1e-4)
    assert {unfreeze for _, _, unfreeze in scores} == {"none", "backbone"} or len(scores) == 4
    assert best["score"] == max(score for _, score, _ in scores)


def test_mixing_augmentation_and_ema_apply_where_the_backbone_trains():
    x, y = arrays(n=16)
    model = lite0()
    result = tfft.fine_tune(model, (x, y), (x, y), head_epochs=1, finetune_epochs=2, augment="flip,erasing",
                            mixup=0.2, cutmix=0.5, ema=0.9, verbose=0)
    assert result.phases[0].cached_features  # the head phase saw neither augmentation nor mixing
    assert tfft.optim.uses_ema(model.optimizer) and np.isfinite(result.metrics["val_loss"])
    assert (result.recipe.mixup, result.recipe.cutmix, result.recipe.augment) == (0.2, 0.5, "flip,erasing")
    with pytest.raises(ValueError, match=r"cutmix=2: the CutMix alpha must be in \(0, 1\]"):
        tfft.fine_tune(lite0(), (x, y), cutmix=2, verbose=0)


def test_fine_tune_with_lora_trains_adapters_and_ends_merged(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "a"]
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=8)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(keras_hub.models.BertTokenizer(vocabulary=vocab),
                                                                   sequence_length=6)
    model = tfft.build_model(backbone, preprocessor=preprocessor, num_classes=2, weights=None)
    before = [np.array(v) for v in model.get_layer("backbone").get_layer("token_embedding").weights]
    texts, labels = ["a good film", "a bad film", "good", "bad"] * 4, np.array([1, 0, 1, 0] * 4)
    result = tfft.fine_tune(model, (texts, labels), (texts, labels), head_epochs=1, finetune_epochs=2, lora_rank=2,
                            finetune_learning_rate=1e-2, verbose=0)
    lora_phase = result.phases[1]
    assert lora_phase.summary.lora_params > 0 and lora_phase.summary.trainable_params < 0.5 * (
        lora_phase.summary.trainable_params + lora_phase.summary.frozen_params)
    assert not tfft.lora.lora_layers(model)  # merged at the end: a plain model
    after = [np.array(v) for v in model.get_layer("backbone").get_layer("token_embedding").weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # only the adapters (and the head) trained
    path = tmp_path / "lora.keras"
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(texts, verbose=0), model.predict(texts, verbose=0),
                               atol=1e-5)


def test_lora_on_a_cnn_is_refused_before_training(tmp_path):
    x, y = arrays(n=8)
    with pytest.raises(ValueError, match="lora_rank on a backbone without projections"):
        tfft.fine_tune(lite0(), (x, y), lora_rank=8, workdir=str(tmp_path / "w"), verbose=0)
    assert not (tmp_path / "w").exists()


def test_text_rule_follows_the_measured_recipes_by_data_size():
    """BUILD_NOTES: 4 epochs after one head epoch up to 20,000 examples, one epoch beyond (SST-2 measured)."""
    small = default_recipe(modality="text", examples=6_920)
    large = default_recipe(modality="text", examples=61_696)
    assert (small.head_epochs, small.finetune_epochs) == (1, 4)
    assert (large.head_epochs, large.finetune_epochs) == (1, 1)
    assert small.finetune_learning_rate == large.finetune_learning_rate == 1e-4


def _image_folder(root):
    x, y = arrays()
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / f"class_{label}"
        folder.mkdir(exist_ok=True)
        keras.utils.save_img(folder / f"{i}.png", np.clip(image, 0, 255).astype("uint8"))
    return root


def _head_losses(bundle, cache, epochs=4):
    result = tfft.fine_tune(lite0(), bundle.train, bundle.validation, head_epochs=epochs, finetune_epochs=0,
                            patience=epochs + 1, cache_features=cache, verbose=0,
                            feature_store=features_lib.FeatureStore())
    assert result.phases[0].cached_features is cache
    return result.history["loss"]


def test_an_image_folder_trains_the_same_epochs_with_and_without_the_cache(tmp_path):
    """Every epoch, not only the best one that early stopping keeps: the cache must not change training."""
    bundle = tfft.data.from_image_directory(_image_folder(tmp_path), image_size=SHAPE[:2], batch_size=8, seed=5,
                                            validation_split=0.25)
    np.testing.assert_allclose(_head_losses(bundle, True), _head_losses(bundle, False), rtol=1e-5)


def test_an_image_folder_with_run_time_skipping_trains_the_same_epochs_with_and_without_the_cache(tmp_path):
    """validate="header" skips bad files at run time: the length is unknown to tf.data, and Keras's
    step past the end of each epoch must not advance Dropout's random state (tfft.phases)."""
    bundle = tfft.data.from_image_directory(_image_folder(tmp_path), image_size=SHAPE[:2], batch_size=8, seed=5,
                                            validation_split=0.25, validate="header")
    np.testing.assert_allclose(_head_losses(bundle, True), _head_losses(bundle, False), rtol=1e-5)
