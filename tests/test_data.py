import json

import pandas as pd
import pytest
import torch

from emo.data import (
    LABELS,
    DataFormatError,
    EmotionDataModule,
    content_digest,
    find_split_file,
    label_id,
    load_local_splits,
    read_table_examples,
    read_txt_examples,
)


def write_splits(folder, train="i feel fine;joy\n", val="i am sad;sadness\n", test="so angry;anger\n", suffix=".txt"):
    for name, text in (("train", train), ("val", val), ("test", test)):
        (folder / f"{name}{suffix}").write_text(text)
    return folder


def test_label_ids_are_the_hub_ids():
    assert LABELS == ("sadness", "joy", "love", "anger", "fear", "surprise")
    assert [label_id(name, "x") for name in LABELS] == list(range(6))
    assert label_id("3", "x") == 3 and label_id(5, "x") == 5 and label_id(" Joy ", "x") == 1


@pytest.mark.parametrize("bad", ["happy", "6", "-1", ""])
def test_unknown_label_names_the_place(bad):
    with pytest.raises(DataFormatError, match=r"f\.txt:7: unknown label"):
        label_id(bad, "f.txt:7")


def test_txt_skips_blank_lines_and_keeps_semicolons_in_text(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\ni feel; torn apart;sadness\n\n  \nim so happy;joy\r\n")
    assert list(read_txt_examples(path)) == [
        {"text": "i feel; torn apart", "label": 0},
        {"text": "im so happy", "label": 1},
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ("no separator here", r"bad\.txt:2: expected '<text>;<label>'"),
        ("i feel;happyish", r"bad\.txt:2: unknown label 'happyish'"),
        ("   ;joy", r"bad\.txt:2: empty text"),
        (";joy", r"bad\.txt:2: empty text"),
    ],
)
def test_malformed_txt_line_stops_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(f"i am fine;joy\n{line}\nlater;fear\n")
    with pytest.raises(DataFormatError, match=message):
        list(read_txt_examples(path))


def test_csv_jsonl_parquet_exports(tmp_path):
    frame = pd.DataFrame({"text": ["i feel calm", "i am scared"], "label": ["joy", 4]})
    frame.astype({"label": str}).to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")))
    frame.astype({"label": str}).to_parquet(tmp_path / "a.parquet")
    for suffix in ("csv", "jsonl", "parquet"):
        assert list(read_table_examples(tmp_path / f"a.{suffix}")) == [
            {"text": "i feel calm", "label": 1},
            {"text": "i am scared", "label": 4},
        ]


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\ngood text,joy\n,joy\n")
    with pytest.raises(DataFormatError, match=r"train\.csv: line 3: empty text"):
        list(read_table_examples(path))
    path.write_text("text,label\ngood text,joy\nother,bliss\n")
    with pytest.raises(DataFormatError, match=r"train\.csv: line 3: unknown label 'bliss'"):
        list(read_table_examples(path))
    path.write_text("sentence,label\nx,joy\n")
    with pytest.raises(DataFormatError, match="missing column.*text"):
        list(read_table_examples(path))


def test_split_files_are_found_by_name(tmp_path):
    write_splits(tmp_path)
    assert find_split_file(tmp_path, "validation").name == "val.txt"
    (tmp_path / "validation.csv").write_text("text,label\nx,joy\n")
    with pytest.raises(DataFormatError, match="several files"):
        find_split_file(tmp_path, "validation")
    (tmp_path / "test.txt").unlink()
    with pytest.raises(DataFormatError, match="no file for the test split"):
        find_split_file(tmp_path, "test")


def test_local_splits_report_bad_lines_not_a_library_traceback(tmp_path):
    write_splits(tmp_path, val="fine;joy\n\nbroken line\n")
    with pytest.raises(DataFormatError, match=r"val\.txt:3: expected"):
        load_local_splits(str(tmp_path))


def test_real_files_load_with_hub_labels(data_dir):
    splits = load_local_splits(str(data_dir))
    assert {name: len(split) for name, split in splits.items()} == {"train": 16000, "validation": 2000, "test": 2000}
    assert splits["train"].features["label"].names == list(LABELS)
    text, label = (data_dir / "train.txt").read_text().splitlines()[0].rsplit(";", 1)
    assert splits["train"][0] == {"text": text, "label": LABELS.index(label)}


def test_digest_follows_content_not_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    first, second = load_local_splits(str(write_splits(a))), load_local_splits(str(write_splits(b)))
    assert content_digest(first["train"]) == content_digest(second["train"])
    (tmp_path / "b" / "train.txt").write_text("i feel fine;love\n")
    changed = load_local_splits(str(tmp_path / "b"))
    assert content_digest(changed["train"]) != content_digest(first["train"])


@pytest.fixture
def datamodule(small_data_dir, tiny_model_dir):
    return EmotionDataModule(data_dir=str(small_data_dir), tokenizer_name_or_path=str(tiny_model_dir), batch_size=8)


def test_datamodule_pads_per_batch(datamodule):
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.splits["train"]) == 300
    widths = set()
    for batch in datamodule.train_dataloader():
        assert set(batch) >= {"input_ids", "attention_mask", "labels"}
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert batch["attention_mask"][:, -1].any()  # the longest text of the batch has no padding
        widths.add(batch["input_ids"].shape[1])
    assert len(widths) > 3  # not padded to one global length
    assert torch.equal(torch.cat([b["labels"] for b in datamodule.val_dataloader()]).sort().values,
                       torch.tensor(sorted(datamodule.splits["validation"]["label"])))  # fmt: skip


def test_tokenized_splits_come_from_the_cache_next_time(datamodule, small_data_dir, tiny_model_dir):
    datamodule.setup("fit")
    again = EmotionDataModule(data_dir=str(small_data_dir), tokenizer_name_or_path=str(tiny_model_dir), batch_size=8)
    again.setup("fit")
    first, second = datamodule.splits["train"], again.splits["train"]
    assert first.cache_files and first.cache_files == second.cache_files
    assert first._fingerprint == second._fingerprint


def test_max_length_truncates(small_data_dir, tiny_model_dir):
    dm = EmotionDataModule(data_dir=str(small_data_dir), tokenizer_name_or_path=str(tiny_model_dir), max_length=8)
    dm.setup("fit")
    assert max(dm.splits["train"]["length"]) == 8


def test_length_grouped_batches_pad_less(small_data_dir, tiny_model_dir):
    def padding_share(group_by_length):
        dm = EmotionDataModule(data_dir=str(small_data_dir), tokenizer_name_or_path=str(tiny_model_dir),
                               batch_size=8, group_by_length=group_by_length)  # fmt: skip
        dm.setup("fit")
        batches = list(dm.train_dataloader())
        assert sum(len(b["labels"]) for b in batches) == 300
        return sum((b["attention_mask"] == 0).sum().item() for b in batches) / sum(b["attention_mask"].numel() for b in batches)

    torch.manual_seed(0)
    assert padding_share(True) < padding_share(False) / 2


def test_train_size_is_a_stratified_subset(data_dir, tiny_model_dir):
    dm = EmotionDataModule(data_dir=str(data_dir), tokenizer_name_or_path=str(tiny_model_dir), train_size=1600)
    dm.setup("fit")
    labels = pd.Series(dm.splits["train"]["label"]).value_counts()
    assert len(dm.splits["train"]) == 1600 and len(dm.splits["test"]) == 2000
    assert labels[LABELS.index("joy")] == pytest.approx(5362 / 10, abs=2)  # class shares kept


def test_predict_file(tmp_path, small_data_dir, tiny_model_dir):
    texts = tmp_path / "texts.txt"
    texts.write_text("i am thrilled\n\n  i feel lonely tonight \n")
    dm = EmotionDataModule(tokenizer_name_or_path=str(tiny_model_dir), predict_file=str(texts))
    dm.setup("predict")
    assert dm.predict_texts == ["i am thrilled", "i feel lonely tonight"]
    assert len(next(iter(dm.predict_dataloader()))["input_ids"]) == 2
