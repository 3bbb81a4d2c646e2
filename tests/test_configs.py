"""Every stock config in experiments/configs/ runs as its docstring says, not only its `:smoke` variant.

Each one is started for real (`experiments.train.run` on the config file as it is) on a
few examples per class with one epoch per phase; where no pretrained weights can be had
offline (ResNet, VGG) it runs with `weights=none` at 64 px, and a keras-hub preset that must be
downloaded fails at once with the offline message. The configs' data are the shared
copies in ../shared/data (the tests skip without them).
"""

import ast
import os
import re
from pathlib import Path

import pytest

from experiments import config as config_lib
from experiments import train
from tfft.errors import OfflineError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))
NO_OFFLINE_WEIGHTS = {"flowers_resnet50.py", "flowers_vgg16.py"}  # keras.applications ImageNet files
NEEDS_A_DOWNLOAD = {"sst2_bert_base.py"}  # the keras-hub preset itself (architecture and vocabulary)


def _small(name, **extra):
    config = config_lib.load_config(str(CONFIG_DIR / name))
    config.data.limit = 6
    config.head_epochs = 1
    config.finetune_epochs = 1
    config.batch_size = 8
    config.verbose = "0"
    if config.data.source == "tfds":
        config.data.mock_examples = 24
    if name in NO_OFFLINE_WEIGHTS:
        config.weights = "none"
        config.image_size = 64  # random weights learn nothing at 224 px either; the code path is the same
    for key, value in extra.items():
        config[key] = value
    config.lock()
    return config


def test_every_config_is_listed_here():
    assert CONFIGS == ["digits_efficientnet_lite0.py", "flowers_efficientnet_lite0.py", "flowers_resnet50.py",
                       "flowers_vgg16.py", "sst2_bert_base.py", "sst2_minilm.py", "tfds_image.py"]


@pytest.mark.parametrize("name", [c for c in CONFIGS if c not in NEEDS_A_DOWNLOAD])
def test_stock_config_runs(tmp_path, shared_data, name):
    metrics = train.run(_small(name), str(tmp_path / "run"))
    split = "test" if "test" in metrics else "validation"
    assert metrics[split]["examples"] > 0 and 0.0 <= metrics[split]["accuracy"] <= 1.0
    assert {p["name"] for p in metrics["phases"]} == {"head", "finetune"}
    for artefact in ("config.json", "model.keras", "metrics.json", "history.csv", "run_state.json"):
        assert (tmp_path / "run" / artefact).is_file(), artefact


@pytest.mark.parametrize("name", sorted(NEEDS_A_DOWNLOAD))
def test_config_of_a_hub_preset_fails_fast_offline_saying_what_to_do(tmp_path, shared_data, name):
    with pytest.raises(OfflineError, match=r"local preset directory|save_to_preset"):
        train.run(_small(name), str(tmp_path / "run"))
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.parametrize("name", CONFIGS)
def test_docstring_commands_name_the_file_and_only_real_keys(name):
    source = (CONFIG_DIR / name).read_text()
    doc = ast.get_docstring(ast.parse(source))
    assert f"--config=experiments/configs/{name}" in doc.replace("\\\n", "")
    keys = re.findall(r"--config\.([\w.]+)=", doc)
    config = config_lib.base_config()
    for key in keys:
        node = config
        for part in key.split("."):
            assert part in node, f"{name}'s docstring names --config.{key}, which is not a config key"
            node = node[part]
    assert os.path.basename(name)
