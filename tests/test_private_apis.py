"""Every private Keras / KerasTuner / TensorFlow / ml_collections name tfft relies on still exists.

BUILD_NOTES.md ("Private APIs") lists each with what uses it and the version it was checked
on; a pinned upgrade that removes or renames one fails here, by name, instead of deep inside
a run.
"""

import importlib

import keras
import pytest
import tensorflow as tf

# (where, attribute, what in tfft uses it)
PRIVATE = [
    ("keras.src.models.functional", "operation_fn", "TransferModel.call: a frozen backbone in inference mode"),
    ("keras.src.models.functional", "unpack_singleton", "TransferModel.call"),
    ("keras.src.models.functional.Functional", "_standardize_inputs", "TransferModel.call"),
    ("keras.src.models.functional.Functional", "_run_through_graph", "TransferModel.call"),
    ("keras.src.backend.tensorflow.trainer.TensorFlowTrainer", "_maybe_symbolic_build",
     "tfft.distribute.enable_keras_multi_worker"),
    ("keras.src.backend.tensorflow.trainer.TensorFlowTrainer", "_symbolic_build", "enable_keras_multi_worker"),
    ("keras.src.backend.tensorflow.trainer", "reduce_per_replica", "enable_keras_multi_worker"),
    ("keras.callbacks.BackupAndRestore", "_save_model", "tfft.callbacks.BackupAndRestore (atomic, one commit)"),
    ("keras.callbacks.BackupAndRestore", "_load_model", "tfft.callbacks.BackupAndRestore"),
    ("keras.callbacks.ModelCheckpoint", "_save_model", "tfft.callbacks.ModelCheckpoint (atomic)"),
    ("keras.callbacks.ModelCheckpoint", "_get_file_path", "tfft.callbacks.ModelCheckpoint"),
    ("keras.callbacks.ModelCheckpoint", "_should_save_model", "tfft.callbacks.ModelCheckpoint"),
    ("keras.callbacks.EarlyStopping", "_set_monitor_op", "tfft.callbacks.EarlyStopping (best weights in a file)"),
    ("keras.callbacks.EarlyStopping", "_is_improvement", "tfft.callbacks.EarlyStopping"),
    ("keras.callbacks.SwapEMAWeights", "_swap_variables", "tfft.optim.EMAWeights"),
    ("keras.layers.Layer", "_flatten_layers", "tfft.order (seed states), tfft.freezing"),
    ("keras.optimizers.Optimizer", "_var_key", "tfft.optim layer-wise learning-rate decay"),
    ("keras_tuner.src.engine.tuner_utils", "SaveBestEpoch", "tfft.tuning: trial checkpoints of the full model"),
    ("keras_tuner.src.engine.tuner_utils", "TunerCallback", "tfft.tuning"),
    ("keras_tuner.src.engine.tuner_utils", "validate_trial_results", "trial_isolation='process'"),
    ("keras_tuner.src.engine.tuner_utils.SaveBestEpoch", "_save_model", "tfft.tuning.DeferredBestEpoch"),
    ("keras_tuner.src.engine.base_tuner.BaseTuner", "_is_worker", "tfft.tuning: who writes the results"),
    ("keras_tuner.src.engine.tuner.Tuner", "_build_and_fit_model", "tfft.tuning: seeded trials"),
    ("keras_tuner.src.engine.tuner.Tuner", "_get_checkpoint_fname", "trial_isolation='process'"),
    ("keras_tuner.src.engine.tuner.Tuner", "_get_build_config_fname", "trial_isolation='process'"),
    ("keras_tuner.src.distribute.oracle_client", "TIMEOUT", "tfft.tuning.launch: a bounded wait on a lost chief"),
    ("keras_tuner.src.distribute.oracle_chief", "OracleServicer", "tfft.tuning.launch.serve"),
    ("keras_tuner.src.distribute.oracle_chief", "exit_chief", "tfft.tuning.launch.serve"),
    ("keras_tuner.src.protos", "get_service_grpc", "tfft.tuning.launch.serve"),
    ("keras_tuner.src.utils", "save_json", "trial_isolation='process'"),
    ("ml_collections.config_flags.config_flags", "_ConfigFlag", "experiments.entry.define_config_flag"),
    ("ml_collections.config_flags.config_flags", "ConfigFileFlagParser", "experiments.entry.ConfigParser"),
]


def _resolve(path):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


@pytest.mark.parametrize("where, name, used_by", PRIVATE, ids=[f"{w}.{n}" for w, n, _ in PRIVATE])
def test_private_name_exists(where, name, used_by):
    owner = _resolve(where)
    assert hasattr(owner, name), f"{where}.{name} is gone (used by {used_by}): recheck it against the upgrade"


def test_private_attributes_of_objects():
    """Attributes that exist on instances only."""
    inputs = keras.Input((2,))
    dense = keras.layers.Dense(1)
    out = dense(inputs)
    assert hasattr(out, "_keras_history") and hasattr(dense, "_inbound_nodes") and hasattr(dense, "_outbound_nodes")
    dropout = keras.layers.Dropout(0.5)
    assert dropout._seed_generators and hasattr(dropout._seed_generators[0], "state")  # tfft.order, seed_head
    model = keras.Model(inputs, out)
    assert hasattr(model, "_initial_epoch")  # set by BackupAndRestore; tfft.phases reads and resets it
    assert hasattr(keras.optimizers.Adam(), "_learning_rate")  # tfft.optim.uses_schedule
    ds = tf.data.Dataset.range(4).shuffle(4).batch(2)
    assert hasattr(ds, "_inputs") and hasattr(ds, "_batch_size")  # tfft.distribute, tfft.order
    assert any(getattr(d, "_reshuffle_each_iteration", None) is not None for d in [ds._inputs()[0]])
