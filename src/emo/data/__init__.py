"""Labelled texts: file formats (`formats`), class names and ids (`labels`), the splits of a folder or the Hub (`splits`), the resumable training
order (`sampler`) and the LightningDataModule (`module`)."""

from emo.data.formats import READERS, DataFormatError, label_name, read_table_examples, read_txt_examples
from emo.data.labels import checked_names, names_in
from emo.data.module import EmotionDataModule, batch_size_of
from emo.data.sampler import EpochSampler, length_buckets
from emo.data.splits import check_data_files, content_digest, find_split_file, load_local_splits, read_predict_texts

__all__ = [
    "READERS",
    "DataFormatError",
    "EmotionDataModule",
    "EpochSampler",
    "batch_size_of",
    "check_data_files",
    "content_digest",
    "find_split_file",
    "checked_names",
    "label_name",
    "length_buckets",
    "load_local_splits",
    "names_in",
    "read_predict_texts",
    "read_table_examples",
    "read_txt_examples",
]
