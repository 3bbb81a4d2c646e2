"""Tests of tfft.lora: LoRA adapters through Keras's enable_lora, the "lora:<rank>" spec, merging.

Tiny models (a 2-layer BERT of hidden size 16, a two-Dense backbone) keep each test to seconds.
"""

import keras
import numpy as np
import pytest

import tfft
from tfft import lora

keras_hub = pytest.importorskip("keras_hub")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "movie", "was", "great", "good", "fun", "bad",
         "awful", "boring", "plot", "not", "very"]
TEXTS = ["a great movie", "very good fun", "the plot was great", "good fun", "a bad movie", "awful plot",
         "the movie was boring", "not good"]
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])
QV = [f"transformer_layer_{i}/self_attention_layer/{name}" for i in (0, 1) for name in ("query", "value")]


def tiny_text_model(**kwargs):
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(VOCAB), num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=16)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=8)
    return tfft.build_model(backbone, preprocessor=preprocessor, task="binary", **kwargs)


def tiny_dense_model():
    """A Dense-only backbone (with a BatchNormalization between its projections) under a 3-class head."""
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(12, activation="relu", name="proj_in"),
                                 keras.layers.BatchNormalization(name="norm"), keras.layers.Dense(8, name="proj_out")])
    return tfft.build_model(backbone, num_classes=3, dropout=0.0)


def tiny_cnn_model():
    backbone = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, name="block1_conv"),
                                 keras.layers.BatchNormalization(name="block1_bn")])
    return tfft.build_model(backbone, num_classes=2)


def values(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


def changed(before, model):
    after = values(model)
    return {path for path, value in before.items() if not np.array_equal(value, after[path])}


def param_count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def train(model, x, y, steps=3, learning_rate=1e-2):
    tfft.compile_model(model, learning_rate=learning_rate)
    model.fit(x, y, batch_size=len(y), epochs=steps, verbose=0)


# --------------------------------------------------------------------------------------------
# keras-hub BERT: query / value adapters through Backbone.enable_lora
# --------------------------------------------------------------------------------------------


def test_bert_adapters_train_and_the_base_is_frozen():
    model = tiny_text_model()
    summary = lora.enable_lora(model, 4)
    assert sorted(summary.lora_layers) == sorted(QV)
    trainable = sorted(v.path for v in model.trainable_weights)
    expected = sorted([f"{p}/lora_kernel_{ab}" for p in QV for ab in "ab"] + ["head_logits/kernel", "head_logits/bias"])
    assert trainable == expected  # no base kernel, no query / value bias, nothing else of the encoder
    head = param_count(model.get_layer("head_logits").weights)
    assert summary.lora_params == param_count([v for v in model.trainable_weights if "lora_kernel" in v.path])
    assert summary.trainable_params == summary.lora_params + head
    assert summary.total_params == param_count(model.weights)
    assert 0 < summary.trainable_fraction < 0.2 and summary.rank == 4 and summary.alpha == 4.0
    backbone = model.get_layer("backbone")
    assert backbone.trainable_weights  # fine_tune does not take it for frozen (no feature caching)
    query = backbone.get_layer("transformer_layer_0")._self_attention_layer._query_dense
    assert query.lora_enabled and not query._kernel.trainable and not query.bias.trainable
    assert "LoRA rank 4" in str(summary)


def test_bert_training_step_changes_only_adapters_and_head():
    model = tiny_text_model()
    lora.enable_lora(model, 4)
    before = values(model)
    train(model, TEXTS, LABELS, steps=3)
    moved = changed(before, model)
    allowed = {f"{p}/lora_kernel_{ab}" for p in QV for ab in "ab"} | {"head_logits/kernel", "head_logits/bias"}
    assert moved and moved <= allowed, moved - allowed
    assert {f"{p}/lora_kernel_b" for p in QV} <= moved  # B starts at zero and moves first
    assert "head_logits/kernel" in moved


def test_bert_merge_then_save_and_load_predicts_identically(tmp_path):
    model = tiny_text_model()
    lora.enable_lora(model, 4, alpha=8)
    train(model, TEXTS, LABELS, steps=4, learning_rate=5e-2)
    adapted = model.predict(TEXTS, verbose=0)
    merged = lora.merge_lora(model)
    assert sorted(merged) == sorted(QV)
    assert not lora.lora_layers(model) and not [v for v in model.weights if "lora" in v.path]
    np.testing.assert_allclose(model.predict(TEXTS, verbose=0), adapted, atol=1e-5)
    path = str(tmp_path / "merged.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert not lora.lora_layers(loaded)  # plain EinsumDense layers: no lora_rank in the file's config
    assert "lora_rank" not in open_config(path)
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), adapted, atol=1e-5)
    assert not loaded.get_layer("backbone").trainable_weights  # saved frozen, ready for another head phase


def open_config(path):
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return archive.read("config.json").decode()


def test_freeze_spec_and_build_model_argument():
    model = tiny_text_model(freeze="lora:2")
    summary = tfft.freeze(model, "lora:2")  # again: idempotent, the same adapters
    assert isinstance(summary, lora.LoraSummary) and summary.rank == 2 and len(summary.lora_layers) == 4
    tfft.freeze(model, "backbone")  # the head phase: adapters frozen too
    assert [v.path for v in model.trainable_weights] == ["head_logits/kernel", "head_logits/bias"]
    assert tfft.unfreeze(model, "lora:2").trainable_params == summary.trainable_params
    lora.enable_lora(model, 2, alpha=6)
    assert tfft.unfreeze(model, "lora:2").alpha == 6.0  # re-applying keeps the adapters' scale
    with pytest.raises(ValueError, match="already has LoRA adapters of rank 2"):
        tfft.unfreeze(model, "lora:4")
    with pytest.raises(ValueError, match="positive integer rank"):
        tfft.freeze(model, "lora:eight")
    with pytest.raises(ValueError, match="spec of its own"):
        tfft.freeze(model, ["embeddings", "lora:2"])


def test_a_model_saved_with_adapters_loads_and_its_adapters_train_again(tmp_path):
    """Keras saves a LoRA layer's merged kernel and reloads it with A = B = 0 (no gradient reaches
    either); enable_lora re-initializes A so that training moves the adapters again."""
    model = tiny_text_model()
    lora.enable_lora(model, 2)
    train(model, TEXTS, LABELS, steps=3)
    expected = model.predict(TEXTS, verbose=0)
    model.save(tmp_path / "unmerged.keras")
    loaded = keras.models.load_model(tmp_path / "unmerged.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), expected, atol=1e-5)
    lora.enable_lora(loaded, 2)
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), expected, atol=1e-5)  # B = 0: same function
    before = values(loaded)
    train(loaded, TEXTS, LABELS, steps=2)
    assert {f"{p}/lora_kernel_b" for p in QV} <= changed(before, loaded)


# --------------------------------------------------------------------------------------------
# Other backbones: Keras's Dense.enable_lora on the layers `targets` names
# --------------------------------------------------------------------------------------------


def test_dense_backbone_targets_regex_batchnorm_and_merge(tmp_path):
    model = tiny_dense_model()
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    y = np.arange(16) % 3
    summary = lora.enable_lora(model, 2, targets="proj_out")
    assert summary.lora_layers == ["proj_out"] and summary.lora_params == 12 * 2 + 2 * 8
    assert lora.enable_lora(model, 2).lora_layers == ["proj_in", "proj_out"]  # default: every projection
    norm = model.get_layer("backbone").get_layer("norm")
    assert not norm.trainable and summary.frozen_batchnorm == 1
    before = values(model)
    train(model, x, y, steps=3)
    moved = changed(before, model)
    adapters = {v.path for _, layer in lora.lora_layers(model) for v in (layer.lora_kernel_a, layer.lora_kernel_b)}
    assert moved <= adapters | {"head_logits/kernel", "head_logits/bias"}, moved
    assert len(adapters & moved) >= 2 and not any("norm/" in p for p in moved)  # B moved; BN in inference mode
    adapted = model.predict(x, verbose=0)
    assert lora.merge_lora(model) == ["proj_in", "proj_out"]
    model.save(tmp_path / "dense.keras")
    loaded = keras.models.load_model(tmp_path / "dense.keras")
    assert not lora.lora_layers(loaded)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), adapted, atol=1e-5)


def test_targets_that_match_nothing_list_the_projections():
    with pytest.raises(ValueError, match=r"match no Dense / EinsumDense layer.*'proj_in', 'proj_out'"):
        lora.enable_lora(tiny_dense_model(), 2, targets="query")


def test_a_cnn_backbone_is_refused_with_what_was_looked_for():
    with pytest.raises(ValueError, match="lora_rank on a backbone without projections") as error:
        tfft.freeze(tiny_cnn_model(), "lora:8")
    message = str(error.value)
    assert "Dense and EinsumDense" in message and "CNN" in message and "Conv2D" in message
