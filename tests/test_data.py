import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch

import emo.data
from emo.data import (
    DataFormatError,
    EmotionDataModule,
    check_data_files,
    content_digest,
    find_split_file,
    label_name,
    length_buckets,
    load_local_splits,
    read_table_examples,
    read_txt_examples,
)
from emo.data.fetch import CARER_LABELS
from emo.data.labels import encode_splits, label_ids, names_in


def write_splits(
    folder,
    train="i feel fine;joy\ni am down;sadness\nso mad;anger\n",
    val="i am sad;sadness\n",
    test="so angry;anger\n",
    suffix=".txt",
):
    for name, text in (("train", train), ("val", val), ("test", test)):
        (folder / f"{name}{suffix}").write_text(text)
    return folder


def test_given_labels_take_names_ids_and_names_in_other_case():
    ids = label_ids(CARER_LABELS, given=True)
    assert [ids[name] for name in CARER_LABELS] == list(range(6))
    assert ids["3"] == 3 and ids["5"] == 5 and ids["joy"] == 1 and "6" not in ids
    assert label_ids(["a", "b"], given=False) == {"a": 0, "b": 1}  # found names: no ids to give


def test_found_labels_are_sorted_numbers_by_value():
    assert names_in(["joy", "anger", "joy", "fear"]) == ["anger", "fear", "joy"]
    assert names_in(["10", "2", "1"]) == ["1", "2", "10"]


def as_read(labels: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"text": ["t"] * len(labels), "label": labels, "where": [f"f.txt:{i + 1}" for i in range(len(labels))]}
    )


@pytest.mark.parametrize("bad", ["happy", "6", "-1", "1.0", "²"])
def test_a_label_not_among_the_given_names_names_the_place(bad):
    with pytest.raises(
        DataFormatError, match=rf"^f\.txt:2: unknown label '{re.escape(bad)}' \(expected one of sadness, .* or 0-5\)$"
    ):
        encode_splits({"train": as_read(["joy", bad])}, list(CARER_LABELS))


def test_a_label_the_training_split_lacks_names_the_place():
    with pytest.raises(
        DataFormatError, match=r"^f\.txt:1: unknown label 'calm' \(expected one of joy, sad: the training"
    ):
        encode_splits({"train": as_read(["joy", "sad"]), "validation": as_read(["calm"])}, None)


@pytest.mark.parametrize("bad", ["", "  ", 1.5, True, None, float("nan"), pd.NA])
def test_a_value_that_is_no_name_or_id_is_not_a_label(bad):
    with pytest.raises(DataFormatError, match=r"f\.txt:7: unknown label .* \(a label is a name or an id\)"):
        label_name(bad, "f.txt:7")


def test_txt_skips_blank_lines_and_keeps_semicolons_in_text(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\ni feel; torn apart;sadness\n\n  \nim so happy;joy\r\n")
    assert list(read_txt_examples(path)) == [
        {"text": "i feel; torn apart", "label": "sadness", "where": f"{path}:2"},
        {"text": "im so happy", "label": "joy", "where": f"{path}:5"},
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ("no separator here", r"bad\.txt:2: expected '<text>;<label>'"),
        ("i feel;", r"bad\.txt:2: unknown label '' \(a label is a name or an id\)"),
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
        assert [
            {k: v for k, v in e.items() if k != "where"} for e in read_table_examples(tmp_path / f"a.{suffix}")
        ] == [
            {"text": "i feel calm", "label": "joy"},
            {"text": "i am scared", "label": "4"},
        ]


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\ngood text,joy\n,joy\n")
    with pytest.raises(DataFormatError, match=r"train\.csv: line 3: empty text"):
        list(read_table_examples(path))
    path.write_text("text,label\ngood text,joy\nother,\n")
    with pytest.raises(DataFormatError, match=r"train\.csv: line 3: unknown label ''"):
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


def test_real_files_take_the_given_labels_else_their_dataset_info_s_else_their_own_sorted(data_dir, tmp_path):
    splits = load_local_splits(str(data_dir), list(reversed(CARER_LABELS)))  # --data.labels wins over the card
    assert {name: len(split) for name, split in splits.items()} == {"train": 16000, "validation": 2000, "test": 2000}
    assert splits["train"].features["label"].names == list(reversed(CARER_LABELS))
    text, label = (data_dir / "train.txt").read_text().splitlines()[0].rsplit(";", 1)
    assert splits["train"][0] == {"text": text, "label": list(reversed(CARER_LABELS)).index(label)}
    own = load_local_splits(str(data_dir))["train"]  # the folder's dataset_info.json: the Hub's ids
    assert own.features["label"].names == list(CARER_LABELS)
    assert own[0] == {"text": text, "label": CARER_LABELS.index(label)}
    for name in ("train.txt", "val.txt", "test.txt"):  # the same files without their dataset_info.json
        (tmp_path / name).symlink_to(data_dir / name)
    found = load_local_splits(str(tmp_path))["train"]
    assert found.features["label"].names == sorted(CARER_LABELS)
    assert found[0] == {"text": text, "label": sorted(CARER_LABELS).index(label)}


def test_digest_follows_content_not_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    first, second = load_local_splits(str(write_splits(a))), load_local_splits(str(write_splits(b)))
    assert content_digest(first["train"]) == content_digest(second["train"])
    (tmp_path / "b" / "train.txt").write_text("i feel fine;joy\ni am down;sadness\nso mad;anger\nso scared;fear\n")
    changed = load_local_splits(str(tmp_path / "b"))
    assert content_digest(changed["train"]) != content_digest(first["train"])


def test_a_changed_reader_reads_the_files_again(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    first = load_local_splits(str(write_splits(tmp_path)))["train"]
    monkeypatch.setattr(emo.data.splits, "READER_DIGEST", "other code")
    assert load_local_splits(str(tmp_path))["train"].cache_files != first.cache_files


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
    assert torch.equal(
        torch.cat([b["labels"] for b in datamodule.val_dataloader()]).sort().values,
        torch.tensor(sorted(datamodule.splits["validation"]["label"])),
    )


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
        dm = EmotionDataModule(
            data_dir=str(small_data_dir),
            tokenizer_name_or_path=str(tiny_model_dir),
            batch_size=8,
            group_by_length=group_by_length,
        )
        dm.setup("fit")
        batches = list(dm.train_dataloader())
        assert sum(len(b["labels"]) for b in batches) == 300
        return sum((b["attention_mask"] == 0).sum().item() for b in batches) / sum(
            b["attention_mask"].numel() for b in batches
        )

    torch.manual_seed(0)
    assert padding_share(True) < padding_share(False) / 2


def test_length_buckets_cover_every_example_once_in_batches_of_one_length():
    lengths = [3, 9, 3, 5, 9, 3, 5, 7, 3, 9, 5, 3]
    order = length_buckets(lengths, 3, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(len(lengths)))
    batches = [[lengths[i] for i in order[k : k + 3]] for k in range(0, len(order), 3)]
    by_shortest = [length for batch in sorted(batches, key=lambda b: (min(b), max(b))) for length in sorted(batch)]
    assert by_shortest == sorted(
        lengths
    )  # each batch a run of the length-sorted examples: padding only where a length runs out
    again = length_buckets(lengths, 3, torch.Generator().manual_seed(2))
    assert again != order  # another epoch, another order


def test_train_size_is_a_stratified_subset(data_dir, tiny_model_dir):
    dm = EmotionDataModule(
        data_dir=str(data_dir), labels=list(CARER_LABELS), tokenizer_name_or_path=str(tiny_model_dir), train_size=1600
    )
    dm.setup("fit")
    labels = pd.Series(dm.splits["train"]["label"]).value_counts()
    assert len(dm.splits["train"]) == 1600 and len(dm.splits["test"]) == 2000
    assert labels[CARER_LABELS.index("joy")] == pytest.approx(5362 / 10, abs=2)  # class shares kept


def test_predict_file(tmp_path, small_data_dir, tiny_model_dir):
    texts = tmp_path / "texts.txt"
    texts.write_text("i am thrilled\n\n  i feel lonely tonight \n")
    dm = EmotionDataModule(tokenizer_name_or_path=str(tiny_model_dir), predict_file=str(texts))
    dm.setup("predict")
    assert dm.predict_texts == ["i am thrilled", "i feel lonely tonight"]
    assert len(next(iter(dm.predict_dataloader()))["input_ids"]) == 2


def test_predict_batches_are_sorted_by_length_and_know_their_lines(tmp_path, tiny_model_dir):
    texts = ["a much longer text than the others, with many more words in it", "short", "a medium text here"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    dm = EmotionDataModule(
        tokenizer_name_or_path=str(tiny_model_dir), predict_file=str(tmp_path / "texts.txt"), eval_batch_size=1
    )
    dm.setup("predict")
    assert dm.predict_lines == [1, 2, 0]
    lengths = [int(batch["attention_mask"].sum()) for batch in dm.predict_dataloader()]
    assert lengths == sorted(lengths) and len(set(lengths)) == 3


def parquet_bytes(**columns) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buffer)
    return buffer.getvalue()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.txt", "i feel fine;joy\n")
    return buffer.getvalue()


FOLDER = None  # in a files table: make a folder at that path
GOOD = {
    ".txt": b"i feel fine;joy\n",
    ".csv": b"text,label\ni feel fine,joy\n",
    ".jsonl": b'{"text": "i feel fine", "label": "joy"}\n',
    ".json": b'[{"text": "i feel fine", "label": "joy"}]',
    ".parquet": parquet_bytes(text=["i feel fine"], label=["joy"]),
}
UTF8_HINT = "; save the file as UTF-8"
UNKNOWN = " (expected one of sadness, joy, love, anger, fear, surprise or 0-5)"
NOT_A_LABEL = " (a label is a name or an id)"


def bad_split(name: str, content: bytes | None, message: str, id: str):
    """A folder of good train/val/test files in `name`'s format, `name` replaced by `content`; checked for a fit."""
    suffix = name[name.index(".") :]
    files = {f"{split}{suffix}": GOOD[suffix] for split in ("train", "val", "test")} | {name: content}
    return pytest.param(files, (".", None, "fit"), message, id=id)


def bad_predict_file(content: bytes | None, message: str, id: str):
    return pytest.param({"texts.txt": content}, (None, "texts.txt", "predict"), message, id=id)


BAD_INPUTS = [
    # Not UTF-8, binary: the line of the first bad byte.
    bad_split("train.txt", b"i feel fine;joy\nso calm;joy\ncaf\xff ok;joy\n",
              "{d}/train.txt:3: not UTF-8 text (byte 0xff at column 4)" + UTF8_HINT, id="txt-latin1"),
    bad_split("train.csv", b"text,label\ni feel fine,joy\nso caf\xe9,joy\n",
              "{d}/train.csv: line 3: not UTF-8 text (byte 0xe9 at column 7)" + UTF8_HINT, id="csv-latin1"),
    bad_split("test.jsonl", b'{"text": "ok", "label": 1}\r\n{"text": "caf\xe9", "label": 1}\r\n',
              "{d}/test.jsonl: line 2: not UTF-8 text (byte 0xe9 at column 14)" + UTF8_HINT, id="jsonl-latin1"),
    bad_split("val.json", b'[\n{"text": "ok", "label": 1},\n{"text": "caf\xe9", "label": 1}]',
              "{d}/val.json: line 3: not UTF-8 text (byte 0xe9 at column 14)" + UTF8_HINT, id="json-latin1"),
    bad_split("train.txt", "i feel fine;joy\n".encode("utf-16"),
              "{d}/train.txt: UTF-16 text, not UTF-8" + UTF8_HINT, id="txt-utf16"),
    bad_split("train.txt", zip_bytes(),
              "{d}/train.txt: binary content (a NUL byte at line 1), not a text file", id="zip"),
    bad_split("val.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
              "{d}/val.csv: binary content (a NUL byte at line 3), not a text file", id="png"),
    bad_split("train.txt", b"i feel fine;joy\ni feel\x00;joy\n",
              "{d}/train.txt: binary content (a NUL byte at line 2), not a text file", id="nul"),
    bad_split("train.parquet", GOOD[".csv"],
              "{d}/train.parquet: not a Parquet file (Parquet magic bytes not found in footer)", id="csv-as-parquet"),
    # Empty, blank, no rows.
    bad_split("train.txt", b"", "{d}/train.txt: no examples (the file is empty or blank)", id="txt-empty"),
    bad_split("test.txt", b"\n  \n\t\r\n", "{d}/test.txt: no examples (the file is empty or blank)", id="txt-blank"),
    bad_split("train.csv", b"", "{d}/train.csv: no examples (the file is empty or blank)", id="csv-empty"),
    bad_split("train.jsonl", b"\n\n", "{d}/train.jsonl: no examples (the file is empty or blank)", id="jsonl-blank"),
    bad_split("train.parquet", b"", "{d}/train.parquet: no examples (the file is empty or blank)", id="parquet-empty"),
    bad_split("train.csv", b"text,label\n", "{d}/train.csv: no examples (the file has no rows)", id="csv-header-only"),
    bad_split("train.json", b"[]", "{d}/train.json: no examples (the file has no rows)", id="json-empty-list"),
    bad_split("train.parquet", parquet_bytes(text=[], label=[]),
              "{d}/train.parquet: no examples (the file has no rows)", id="parquet-no-rows"),
    # Columns and fields.
    bad_split("train.csv", b"text,label,source\ni feel fine,joy,web\n",
              "{d}/train.csv: unexpected column(s) source; keep only text and label", id="csv-extra-column"),
    bad_split("train.csv", b"text,label,label\ni feel fine,joy,joy\n", "{d}/train.csv: repeated column(s) label",
              id="csv-repeated-column"),
    bad_split("train.parquet", parquet_bytes(text=["ok"], label=[1], source=["web"]),
              "{d}/train.parquet: unexpected column(s) source; keep only text and label", id="parquet-extra-column"),
    bad_split("train.parquet", parquet_bytes(sentence=["ok"], label=[1]),
              "{d}/train.parquet: missing column(s) text (has sentence, label)", id="parquet-missing-column"),
    bad_split("train.csv", b"text,label\ni feel fine,joy\ni feel, fine,joy\n",
              "{d}/train.csv: line 3: expected 2 fields, found 3", id="csv-more-fields"),
    bad_split("train.csv", b"text,label\ni feel fine,joy\ni feel fine\n",
              "{d}/train.csv: line 3: expected 2 fields, found 1", id="csv-fewer-fields"),
    bad_split("train.csv", b'text,label\n"two\nlines",joy\n\n"ok",joy,x\n',
              "{d}/train.csv: line 5: expected 2 fields, found 3", id="csv-lines-not-rows"),
    bad_split("train.csv", b'text,label\ni feel fine,joy\n"unclosed,joy\n',
              "{d}/train.csv: line 3: not valid CSV (unexpected end of data)", id="csv-open-quote"),
    bad_split("train.jsonl", b'{"text": "a", "label": 1}\n\n{"text": "b", "label": 1}\n{"text": "c" "label": 1}\n',
              "{d}/train.jsonl: line 4: not valid JSON (Expecting ',' delimiter at column 14)", id="jsonl-bad-json"),
    bad_split("train.jsonl", b'{"text": "a", "label": 1}\n["b", 1]\n',
              "{d}/train.jsonl: line 2: expected an object with text and label, got a list", id="jsonl-not-object"),
    bad_split("train.jsonl", b'{"text": "a", "label": 1}\n{"text": "b"}\n',
              "{d}/train.jsonl: line 2: missing column(s) label (has text)", id="jsonl-missing-key"),
    bad_split("train.jsonl", b'{"text": "a", "label": 1, "source": "web"}\n',
              "{d}/train.jsonl: line 1: unexpected column(s) source; keep only text and label", id="jsonl-extra-key"),
    bad_split("train.json", b'{"text": {"0": "a"}, "label": {"0": 1}}',
              '{d}/train.json: expected a list of records [{{"text": ..., "label": ...}}, ...], got an object',
              id="json-columns-not-records"),
    bad_split("train.json", b'[{"text": "a", "label": 1}, "b"]',
              "{d}/train.json: row 2: expected an object with text and label, got a string",
              id="json-record-not-object"),
    bad_split("train.json", b'[{"text": "a",\n "label": 1',
              "{d}/train.json: line 2: not valid JSON (Expecting ',' delimiter at column 12)", id="json-truncated"),
    # Labels that are not names or ids 0-5, whatever type the format gives them.
    bad_split("train.txt", b"i feel fine;joy\nso so;1.5\n",
              "{d}/train.txt:2: unknown label '1.5'" + UNKNOWN, id="txt-float"),
    bad_split("train.csv", b"text,label\na,joy\nb,1.0\n", "{d}/train.csv: line 3: unknown label '1.0'" + UNKNOWN,
              id="csv-float-text"),
    bad_split("train.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": true}\n',
              "{d}/train.jsonl: line 2: unknown label 'True'" + NOT_A_LABEL, id="jsonl-bool"),
    bad_split("train.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": null}\n',
              "{d}/train.jsonl: line 2: unknown label 'None'" + NOT_A_LABEL, id="jsonl-null"),
    bad_split("train.json", b'[{"text": "a", "label": 1}, {"text": "b", "label": NaN}]',
              "{d}/train.json: row 2: unknown label 'nan'" + NOT_A_LABEL, id="json-nan"),
    bad_split("train.parquet", parquet_bytes(text=["a", "b"], label=[1.5, 2.0]),
              "{d}/train.parquet: row 1: unknown label '1.5'" + NOT_A_LABEL, id="parquet-float"),
    bad_split("train.parquet", parquet_bytes(text=["a", "b"], label=[True, False]),
              "{d}/train.parquet: row 1: unknown label 'True'" + NOT_A_LABEL, id="parquet-bool"),
    bad_split("train.parquet", parquet_bytes(text=["a", "b"], label=pd.array([1, None], dtype="Int64")),
              "{d}/train.parquet: row 2: unknown label '<NA>'" + NOT_A_LABEL, id="parquet-null-label"),
    bad_split("train.parquet", parquet_bytes(text=["a", None], label=[1, 2]),
              "{d}/train.parquet: row 2: expected text, got <NA>", id="parquet-null-text"),
    # Folders and files in each other's place.
    bad_split("train.txt", FOLDER, "{d}/train.txt is a folder, not a file", id="split-is-folder"),
    bad_split("val.parquet", FOLDER, "{d}/val.parquet is a folder, not a file", id="spark-parquet-folder"),
    pytest.param({"train.txt": GOOD[".txt"]}, ("train.txt", None, "fit"),
                 "--data.data_dir {d}/train.txt is a file; give the folder that holds train/val/test files",
                 id="data-dir-is-file"),
    # The predict file.
    pytest.param({}, (None, "texts.txt", "predict"), "{d}/texts.txt: no such file", id="predict-missing"),
    bad_predict_file(FOLDER, "{d}/texts.txt is a folder, not a file", id="predict-folder"),
    bad_predict_file(b"i am thrilled\nso caf\xe9\n",
                     "{d}/texts.txt:2: not UTF-8 text (byte 0xe9 at column 7)" + UTF8_HINT, id="predict-latin1"),
    bad_predict_file(zip_bytes(), "{d}/texts.txt: binary content (a NUL byte at line 1), not a text file",
                     id="predict-binary"),
    bad_predict_file(b"", "{d}/texts.txt: no texts to predict (the file is empty or blank)", id="predict-empty"),
    bad_predict_file(b" \n\n", "{d}/texts.txt: no texts to predict (the file is empty or blank)", id="predict-blank"),
]  # fmt: skip


@pytest.mark.parametrize("files, inputs, message", BAD_INPUTS)
def test_bad_inputs_stop_with_one_line_naming_file_and_line(tmp_path, files, inputs, message):
    for name, content in files.items():
        (tmp_path / name).mkdir() if content is FOLDER else (tmp_path / name).write_bytes(content)
    data_dir, predict_file, stage = inputs
    message = message.format(d=tmp_path)
    with pytest.raises(DataFormatError, match=f"^{re.escape(message)}$"):
        check_data_files(
            data_dir and str(tmp_path / data_dir),
            predict_file and str(tmp_path / predict_file),
            stage,
            list(CARER_LABELS),
        )


def write_dataset_info(folder, names) -> None:
    """A dataset_info.json as `datasets` writes one, with these classes."""
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))})
    datasets.DatasetInfo(features=features).write_to_directory(str(folder))


def test_a_folder_s_dataset_info_numbers_its_classes_and_its_files_may_give_their_ids(tmp_path):
    write_splits(tmp_path, test="so angry;2\n")  # 2: the third name
    write_dataset_info(tmp_path, ["sadness", "joy", "anger", "calm"])
    splits = load_local_splits(str(tmp_path))
    assert splits["train"].features["label"].names == ["sadness", "joy", "anger", "calm"]
    assert splits["train"]["label"] == [1, 0, 2] and splits["test"]["label"] == [2]
    assert load_local_splits(str(tmp_path), ["anger", "joy", "sadness"])["train"]["label"] == [1, 2, 0]


def test_a_label_the_dataset_info_does_not_name_is_one_line_naming_both_files(tmp_path):
    write_splits(tmp_path, test="so hopeful;optimism\n")
    write_dataset_info(tmp_path, CARER_LABELS)
    expected = (
        f"{tmp_path}/test.txt:1: unknown label 'optimism' (expected one of sadness, joy, love, anger, fear, surprise "
        f"or 0-5, as {tmp_path}/dataset_info.json names them)"
    )
    with pytest.raises(DataFormatError, match=f"^{re.escape(expected)}$"):
        load_local_splits(str(tmp_path))


def class_label(names) -> bytes:
    return json.dumps({"features": {"label": {"names": names, "_type": "ClassLabel"}}}).encode()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{oops", "line 1: not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        (b"[1, 2]", "expected an object (a datasets DatasetInfo), got a list"),
        (b'{"features": {"label": {"_type": "Nope"}}}', "not a datasets DatasetInfo (Feature type 'Nope' not found."),
        (b'{"description": "no features"}', "no class names (expected features.label to be a ClassLabel"),
        (b'{"features": {"label": {"dtype": "string", "_type": "Value"}}}', "no class names (expected features"),
        (class_label(["joy"]), "give at least two class names, none empty (got ['joy'])"),
        (class_label(["joy", "joy"]), "not a datasets DatasetInfo (Some label names are duplicated."),
        (b"\x00\x01binary", "binary content (a NUL byte at line 1), not a text file"),
        (FOLDER, "is a folder, not a file"),
    ],
    ids=["not-json", "a-list", "unknown-feature", "no-features", "no-class-label", "one-name", "a-name-twice",
         "binary", "a-folder"],
)  # fmt: skip
def test_a_dataset_info_that_cannot_be_read_is_one_line_naming_it(tmp_path, content, message):
    write_splits(tmp_path)
    path = tmp_path / "dataset_info.json"
    path.mkdir() if content is FOLDER else path.write_bytes(content)
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}:? {re.escape(message)}"):
        load_local_splits(str(tmp_path))


def test_check_inputs_refuses_a_drop_of_the_leaks_that_leaves_nothing_to_train_on(tmp_path):
    write_splits(tmp_path, val="i feel fine;joy\n", test="i am down;sadness\nso mad;anger\n")
    check_data_files(str(tmp_path), None, "fit", drop_leaks=False)
    with pytest.raises(DataFormatError, match=r"^--data.drop_leaks: the text of every training example \(3\) stands"):
        check_data_files(str(tmp_path), None, "fit", drop_leaks=True)


def test_check_inputs_reads_only_what_the_stage_uses(tmp_path):
    (tmp_path / "texts.txt").write_text("i am thrilled\n")
    check_data_files(str(tmp_path / "no-data-here"), str(tmp_path / "texts.txt"), "predict")  # predict reads no splits
    check_data_files(None, str(tmp_path / "missing.txt"), "fit")  # the Hub dataset is left to datasets; no predict file


def test_check_inputs_fills_the_cache_that_training_loads(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    check_data_files(str(data_dir), None, "fit")
    written = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.arrow")}
    splits = load_local_splits(str(data_dir))
    assert {name: len(split) for name, split in splits.items()} == {"train": 16000, "validation": 2000, "test": 2000}
    cached = {Path(file["filename"]) for split in splits.values() for file in split.cache_files}
    assert len(cached) == 3 and cached <= set(
        written
    )  # files check_data_files wrote (as read, then labelled), not new ones
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.arrow")} == written


def test_written_splits_read_back_as_the_same_examples(tmp_path):
    from emo.data.fetch import data_digest, write_splits

    texts = {
        "train": ["i feel fine; really", "ça va très bien", "so angry"],
        "validation": ["i am sad"],
        "test": ["wow;"],
    }
    labels = {"train": [1, 1, 3], "validation": [0], "test": [5]}
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(CARER_LABELS))}
    )
    built = {
        split: datasets.Dataset.from_dict({"text": texts[split], "label": labels[split]}, features=features)
        for split in texts
    }
    write_splits(built, tmp_path / "emotion")
    assert (tmp_path / "emotion" / "val.txt").read_text() == "i am sad;sadness\n"  # the authors' format
    read = load_local_splits(str(tmp_path / "emotion"))  # the classes from the dataset_info.json written beside
    assert read["train"].features["label"].names == list(CARER_LABELS)
    assert {split: (list(read[split]["text"]), list(read[split]["label"])) for split in texts} == {
        split: (texts[split], labels[split]) for split in texts
    }
    assert data_digest(read) == data_digest(built)  # the digest is of the examples, whatever their file


def test_the_lab_copy_is_linked_and_is_the_data_emo_was_measured_on(tmp_path, data_dir, capsys):
    from emo.data.fetch import difference, fetch

    target = tmp_path / "project" / "data" / "emotion"
    assert "->" in fetch(target, data_dir)
    assert target.is_symlink() and (target / "train.txt").is_file()
    assert "warning" not in capsys.readouterr().err  # 16,000/2,000/2,000 and the digest written in the repo
    assert "(already there)" in fetch(target, data_dir)
    assert difference(target) is None  # the sizes and the digest written in the repo (EXPECTED_DIGEST)


def test_a_copy_fetched_without_its_dataset_info_gets_the_hub_s_and_one_that_names_others_is_a_warning(
    tmp_path, data_dir, capsys
):
    from emo.data.fetch import difference, fetch

    target = tmp_path / "emotion"  # as an earlier `emo data` downloaded it: the files alone
    target.mkdir()
    for name in ("train.txt", "val.txt", "test.txt"):
        (target / name).symlink_to(data_dir / name)
    assert "dataset_info.json added" in fetch(target, tmp_path / "nowhere")
    assert load_local_splits(str(target))["train"].features["label"].names == list(CARER_LABELS)
    assert difference(target) is None and "warning" not in capsys.readouterr().err
    write_dataset_info(target, sorted(CARER_LABELS))
    assert difference(target) == (
        f"its dataset_info.json names the classes {sorted(CARER_LABELS)}: a fit would number them otherwise than the "
        "Hub (sadness, joy, love, anger, fear, surprise)"
    )


def test_a_copy_that_differs_is_one_warning_line(tmp_path, small_data_dir, capsys):
    from emo.data.fetch import fetch

    fetch(tmp_path / "emotion", small_data_dir)
    [warning] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("emo:")]  # and data bars
    assert warning.startswith("emo: warning: ") and "train 300, validation 100, test 100 examples" in warning


def test_no_copy_and_no_hub_is_one_line_that_says_what_to_do(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "emo",
            "data",
            "--target",
            str(tmp_path / "emotion"),
            "--shared",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"},
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert (
        line.startswith(
            f"emo: error: no emotion data: {tmp_path / 'nowhere'} is not there and the download of "
            "dair-ai/emotion from the Hugging Face Hub cannot be reached"
        )
        and "--data.data_dir PATH" in line
    )
