"""`tfft.data`: input pipelines that feed tfft models.

Every loader returns a `DataBundle`: batched, prefetched `tf.data.Dataset`s for
the `train`, `validation` and `test` splits (a split that was not asked for is
`None`), with the class names, per-split class counts and the examples behind
each split. A model from `tfft.build_model` trains on `bundle.train` directly.

What the datasets yield:

* Images: `(images, labels)`, images float32 of shape `(batch, H, W, 3)` with
  RAW 0-255 RGB pixels (the backbone's own preprocessing sits inside the
  model). Grayscale is expanded to RGB, an alpha channel is dropped, and an
  animated GIF gives its first frame.
* Text: `(strings, labels)` with `tf.string` sentences (tokenization happens
  inside the model); sentence pairs give `((strings_a, strings_b), labels)`.
* Labels: int class indices (multiclass / binary), multi-hot float32 vectors
  (multilabel) or float32 values (regression, `from_arrays` only).

Policies:

* Labels come from the class folder name or the label column, never from an
  example's position, so dropping a bad file cannot shift a label. Class names
  are `class_names=` when given, else the sorted folder names / label values of
  the training source (integer-like label values sort numerically).
* `on_bad_file="skip"` (default) drops a file that has an image extension but
  does not decode, an unreadable text file, a row with an empty or unknown
  label, and logs one warning with the count and the first few paths.
  `on_bad_file="raise"` raises a `ValueError` naming them instead. Files with
  other extensions (`.DS_Store`, `notes.txt` next to images) are ignored.
* Images are checked before any dataset is built (`validate="decode"`: a
  parallel `tf.io.decode_image` pass with the decoder training uses, which
  catches truncated files; `"header"`: a cheaper PIL header check; `"none"`).
  With `"skip"` the pipeline also ignores decode errors at run time, so a file
  damaged later never stops training halfway.
* Structural problems always raise `ValueError`: a missing column, an empty
  class folder that was not named in `class_names`, a split that ends up
  empty, labels outside `[0, num_classes)` in `from_arrays`.
* Splits are stratified per class and reproducible with `seed` (default 42):
  `validation_split` and `test_split` are fractions of each class, rounded per
  class, and every class keeps at least one training example. `kfold` gives
  stratified folds from the same examples.
* Performance: files are streamed from disk (`tf.data` over the file list,
  decoded with `num_parallel_calls=AUTOTUNE`), never loaded into NumPy.
  `cache="auto"` caches the resized images in memory when they fit in
  `AUTO_CACHE_BYTES`; `cache=True|False` forces it; a path caches to files
  under that directory. The training split is reshuffled each epoch (from
  `seed`, so the order is reproducible); augmentation (Keras preprocessing
  layers) runs on training batches only; every split is prefetched.
* `from_tfds` finds the image / text / label features from the builder's
  `info.features`. When the dataset is not prepared in `data_dir` it only
  starts a download if the storage host answers within a few seconds; offline
  it raises `DatasetNotPreparedError` at once, saying how to prepare the data
  elsewhere and point `data_dir` at it.

Example:

```python
import tfft

bundle = tfft.data.from_image_directory(
    "flowers/", backbone="resnet50", validation_split=0.2, augment=True
)
print(bundle.summary())
model = tfft.build_model("resnet50", num_classes=bundle.num_classes)
model.fit(
    bundle.train,
    validation_data=bundle.validation,
    class_weight=tfft.data.class_weights(bundle),
)
```

Modules: `bundle` (the `DataBundle`), `augment` (augmentation layers), `pipeline` (examples
to batched datasets), `splits` (stratified splits, folds, class weights), `folders` (class
folders), `images`, `text`, `arrays`, `tfds` (the loaders).
"""

from tfft.data.arrays import from_arrays
from tfft.data.augment import DEFAULT_AUGMENTATIONS, augmentation_layer, is_augmented
from tfft.data.bundle import BAD_FILE_POLICIES, DEFAULT_SEED, SPLITS, TASKS, DataBundle, Examples, dataset_classes
from tfft.data.images import IMAGE_EXTENSIONS, VALIDATE_POLICIES, find_bad_images, from_image_directory
from tfft.data.pipeline import (AUTO_CACHE_BYTES, AUTOTUNE, DEFAULT_IMAGE_SIZE, MAX_SHUFFLE_BUFFER, RESIZE_POLICIES,
                                resolve_image_size)
from tfft.data.splits import class_weights, kfold, kfold_indices, stratified_split_indices
from tfft.data.tables import Table, read_table
from tfft.data.text import TEXT_EXTENSIONS, from_text_files, read_text_table
from tfft.data.tfds import TFDS_STORAGE_HOST, DatasetNotPreparedError, from_tfds, network_available

__all__ = [
    "DataBundle", "Examples", "from_image_directory", "from_text_files", "from_arrays", "from_tfds",
    "augmentation_layer", "is_augmented", "resolve_image_size", "stratified_split_indices", "kfold_indices",
    "kfold", "class_weights", "find_bad_images", "network_available", "DatasetNotPreparedError",
    "IMAGE_EXTENSIONS", "TEXT_EXTENSIONS", "SPLITS", "TASKS", "DEFAULT_SEED", "DEFAULT_AUGMENTATIONS",
    "BAD_FILE_POLICIES", "VALIDATE_POLICIES", "RESIZE_POLICIES", "AUTO_CACHE_BYTES", "AUTOTUNE",
    "DEFAULT_IMAGE_SIZE", "MAX_SHUFFLE_BUFFER", "TFDS_STORAGE_HOST", "Table", "read_table", "read_text_table",
    "dataset_classes",
]
