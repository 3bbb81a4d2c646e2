"""KerasTuner for transfer learning: a HyperModel whose trials are `tfft.fine_tune` runs.

    hypermodel = tfft.TransferHyperModel("efficientnet_lite0", num_classes=5, search_space={"unfreeze": "none"})
    tuner = tfft.make_tuner(hypermodel, algorithm="random", max_trials=20, directory="runs/tune")
    tuner.search(data.train, validation_data=data.validation)
    # runs/tune/tfft/{trials.csv, best_config.json, trials.png}

Modules: `hypermodel` (`TransferHyperModel`, the search space), `tuners` (KerasTuner's
tuners with tfft's additions, `make_tuner`), `results` (`trials.csv`, `best_config.json`,
`trials.png`), `launch` (the chief / worker protocol: checks, the chief's server,
`launch_local`), `trial_data` (the search's data, the same objects for every trial). The
README's "Tuning" section has the recipes for one GPU, many GPUs and many machines.
"""

from tfft.tuning.hypermodel import (
                                    CONFIG_KEYS,
                                    DEFAULT_SEARCH_SPACE,
                                    SEARCH_KEYS,
                                    DeferredBestEpoch,
                                    TransferHyperModel,
                                    trial_seed,
)
from tfft.tuning.launch import free_port, launch_local, worker_env
from tfft.tuning.results import (
                                    BEST_CONFIG,
                                    TRIALS_CSV,
                                    TRIALS_PLOT,
                                    best_config,
                                    export_results,
                                    list_trials,
                                    plot_trials,
                                    trials_table,
)
from tfft.tuning.tuners import (
                                    ALGORITHMS,
                                    BayesianOptimization,
                                    GridSearch,
                                    Hyperband,
                                    RandomSearch,
                                    make_tuner,
                                    search_identity,
)

__all__ = [
    "TransferHyperModel", "make_tuner", "export_results", "best_config", "trials_table", "plot_trials",
    "list_trials", "launch_local", "worker_env", "free_port", "DEFAULT_SEARCH_SPACE", "SEARCH_KEYS", "CONFIG_KEYS",
    "RandomSearch", "BayesianOptimization", "Hyperband", "GridSearch", "ALGORITHMS", "search_identity",
    "trial_seed", "DeferredBestEpoch", "TRIALS_CSV", "BEST_CONFIG", "TRIALS_PLOT",
]
