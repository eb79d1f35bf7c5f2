from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpsearch.data import prepare_data
from hpsearch.errors import DataError
from hpsearch.spec import load_spec, load_spec_text
from toydata import classification_rows, toy_study, write_csv, write_jsonl


def _spec(folder: Path, data_yaml: str, task: str = "text-classification", extra: str = ""):
    (folder / "m").mkdir(exist_ok=True)
    (folder / "m" / "config.json").write_text("{}")
    (folder / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    return load_spec_text(f"name: t\ntask: {task}\ndata:\n{data_yaml}\nmodels: [{{name: m, path: m}}]\n{extra}", folder)


def test_label_map_is_sorted_or_declared(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", classification_rows(30, classes=3))
    data = prepare_data(_spec(tmp_path, "  train: d.csv"))
    assert data.label_map.labels == ("city", "neg", "pos")
    data = prepare_data(_spec(tmp_path, "  train: d.csv\n  labels: [pos, neg, city, unused]"))
    assert data.label_map.labels == ("pos", "neg", "city", "unused")
    assert data.train.columns["label"][:3] == [data.label_map.label2id[r["label"]] for r in classification_rows(30, classes=3)[:3]]


def test_label_unseen_in_training_is_named_with_its_row(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    write_csv(tmp_path / "test.csv", [{"text": "a", "label": "x"}, {"text": "c", "label": "z"}])
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: train.csv\n  test: test.csv"))
    assert "test row 1" in str(info.value) and "'z'" in str(info.value)


def test_training_labels_missing_from_data_labels_name_the_file_and_numbered_labels_get_a_hint(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", [{"text": "a", "label": "0"}, {"text": "b", "label": "1"}])
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: d.csv\n  labels: [neg, pos]"))
    said = str(info.value)
    assert said.startswith(f"{tmp_path / 'd.csv'}: training labels ['0', '1'] are not in data.labels ['neg', 'pos']"), said
    assert "where the numbers stand for the declared labels, write the labels in the data" in said
    write_csv(tmp_path / "d.csv", [{"text": "a", "label": "neg"}, {"text": "b", "label": "neutral"}])
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: d.csv\n  labels: [neg, pos]"))
    assert "training labels ['neutral']" in str(info.value) and "numbers" not in str(info.value)


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", [{"text": "a", "label": "x"}])
    spec = _spec(tmp_path, "  train: d.csv")
    write_csv(tmp_path / "d.csv", [{"sentence": "a", "label": "x"}])  # changed after validation (validate checks headers)
    with pytest.raises(DataError, match=r"no column 'text' \(columns: \['sentence', 'label'\]\).*data.columns"):
        prepare_data(spec)


def test_a_declared_label_no_training_row_has_is_a_warning(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", classification_rows(30))
    data = prepare_data(_spec(tmp_path, "  train: d.csv\n  labels: [pos, neg, meh]"))
    assert data.label_map.labels == ("pos", "neg", "meh")
    assert [w for w in data.warnings if "data.labels declares ['meh'], which no training row has" in w], data.warnings
    assert not prepare_data(_spec(tmp_path, "  train: d.csv\n  labels: [pos, neg]")).warnings


def test_labels_that_differ_only_in_case_spacing_or_number_writing_are_warned_of(tmp_path: Path) -> None:
    """'pos ' and 'POS', '1' and '1.0': each a class of its own, said with the labels; tags alike; clean data says nothing."""
    spellings = ["pos", "pos ", "NEG", "neg", "1", "1.0", "other"]
    write_csv(tmp_path / "d.csv", [{**row, "label": spellings[i % len(spellings)]} for i, row in enumerate(classification_rows(28))])
    data = prepare_data(_spec(tmp_path, "  train: d.csv"))
    assert len(data.label_map) == 7
    said = [w for w in data.warnings if "differ only in case, spacing or the writing of a number" in w]
    assert len(said) == 1 and "3 group(s) of labels in column 'label'" in said[0], data.warnings
    assert "'pos', 'pos '" in said[0] and "'NEG', 'neg'" in said[0] and "'1', '1.0'" in said[0] and "'other'" not in said[0]
    rows = [{"tokens": ["alice", "lives"], "tags": ["B-PER" if i % 2 else "b-per", "O"]} for i in range(10)]
    write_jsonl(tmp_path / "ner.jsonl", rows)
    tags = prepare_data(_spec(tmp_path, "  train: ner.jsonl", task="token-classification")).warnings
    assert [w for w in tags if "1 group(s) of tags in column 'tags'" in w and "'B-PER', 'b-per'" in w], tags
    write_csv(tmp_path / "clean.csv", classification_rows(28))
    assert not [w for w in prepare_data(_spec(tmp_path, "  train: clean.csv")).warnings if "differ only" in w]


def test_empty_text_is_an_error_with_its_row(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", [{"text": "fine", "label": "x"}, {"text": "", "label": "y"}])
    with pytest.raises(DataError, match=r"d\.csv: train row 1 \(counting data rows from 0\): column 'text' is empty"):
        prepare_data(_spec(tmp_path, "  train: d.csv"))


def test_a_problem_in_a_subsample_names_the_row_of_the_file(tmp_path: Path) -> None:
    """The subsample shuffles the rows: a problem found among them is named by its row in the file, where the user looks."""
    rows = classification_rows(60)
    rows[7]["text"] = ""
    write_csv(tmp_path / "d.csv", rows)
    test = classification_rows(40, seed=1)
    test[33]["label"] = "unknown"
    write_csv(tmp_path / "t.csv", test)
    with pytest.raises(DataError, match=r"train row 7 \(counting data rows from 0\): column 'text' is empty"):
        prepare_data(_spec(tmp_path, "  train: d.csv\n  subsample: {train: 59, seed: 3}"))
    rows[7]["text"] = "fine again"
    write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError, match=r"t\.csv: test row 33 \(counting data rows from 0\): label 'unknown' never occurs"):
        prepare_data(_spec(tmp_path, "  train: d.csv\n  test: t.csv\n  subsample: {train: 30, test: 39, seed: 3}"))


def test_every_row_with_a_problem_is_named_at_once(tmp_path: Path) -> None:
    """A file with many bad rows is fixed in one pass: the error names the first and every other row with the problem,
    rather than one row per run."""
    rows = classification_rows(40)
    for row in (3, 9, 17):
        rows[row]["text"] = ""
    write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: d.csv"))
    assert str(info.value) == (f"{tmp_path / 'd.csv'}: train row 3 (counting data rows from 0): column 'text' is empty; fill in or "
                               "remove the row (2 more rows have this problem: 9, 17)")
    with pytest.raises(DataError) as info:  # named by the file's rows, in order, after a subsample shuffled them
        prepare_data(_spec(tmp_path, "  train: d.csv\n  subsample: {train: 39, seed: 3}"))
    named = str(info.value)
    assert "(counting data rows from 0)" in named and "2 more rows have this problem" in named
    rows_named = named.removeprefix(f"{tmp_path / 'd.csv'}: ")  # the folder's name may hold a number too (pytest-3)
    assert sorted(int(n) for n in re.findall(r"\b(3|9|17)\b", rows_named)) == [3, 9, 17], named

    write_csv(tmp_path / "r.csv", [{"text": f"t{i}", "label": {2: "", 5: "abc"}.get(i, str(i / 10))} for i in range(12)])
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: r.csv", task="regression"))
    assert str(info.value).endswith("train row 2 (counting data rows from 0): regression target in 'label' is empty; give the row a "
                                    "number or remove it (1 more row has an empty or non-numeric target: 5)"), str(info.value)

    write_csv(tmp_path / "d.csv", classification_rows(40))
    test = classification_rows(30, seed=1)
    for row in range(4, 30, 2):
        test[row]["label"] = "unknown"
    write_csv(tmp_path / "t.csv", test)
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: d.csv\n  test: t.csv"))
    assert "t.csv: test row 4 (counting data rows from 0): label 'unknown' never occurs" in str(info.value)
    assert str(info.value).endswith("(12 more rows have a label that never occurs in the training data: 6, 8, 10, 12, 14, 16, 18, 20, "
                                    "22, 24 and 2 more)"), str(info.value)


def test_problems_of_every_kind_and_split_are_said_in_one_run(tmp_path: Path) -> None:
    """Missing labels in two splits, then empty texts in two splits and an unknown label: each kind, in each split, took
    a run of its own to find (5 runs for this data, each reading every file again)."""
    from hpsearch.errors import DataProblems, RowError

    train, test = classification_rows(40), classification_rows(20, seed=1)
    train[12]["label"], test[3]["label"] = "", ""
    for rows, row in ((train, 3), (train, 7), (test, 1)):
        rows[row]["text"] = ""
    test[2]["label"] = "huh"
    write_csv(tmp_path / "d.csv", train)
    write_csv(tmp_path / "t.csv", test)
    spec = _spec(tmp_path, "  train: d.csv\n  test: t.csv")
    with pytest.raises(DataProblems) as info:
        prepare_data(spec)
    assert str(info.value) == "\n".join([
        "2 problems with the data:",
        f"  - {tmp_path / 'd.csv'}: 1 train row has a missing or empty label in column 'label' (row 12, counting data rows from 0); "
        "fill in the labels or remove those rows",
        f"  - {tmp_path / 't.csv'}: 1 test row has a missing or empty label in column 'label' (row 3, counting data rows from 0); "
        "fill in the labels or remove those rows"])
    train[12]["label"], test[3]["label"] = "pos", "neg"
    write_csv(tmp_path / "d.csv", train)
    write_csv(tmp_path / "t.csv", test)
    with pytest.raises(DataProblems) as info:  # the test split's empty text, then its unknown label: the label's check goes on
        prepare_data(_spec(tmp_path, "  train: d.csv\n  test: t.csv\n  subsample: {test: 19, seed: 3}"))
    problems = info.value.problems
    assert [type(p) for p in problems] == [RowError] * 3
    assert [(p.split, p.row, p.more, p.where) for p in problems] == [("train", 3, (7,), str(tmp_path / "d.csv")),
                                                                     ("test", 1, (), str(tmp_path / "t.csv")),
                                                                     ("test", 2, (), str(tmp_path / "t.csv"))]
    assert "column 'text' is empty" in problems[1].problem and "label 'huh' never occurs" in problems[2].problem
    assert str(info.value).startswith("3 problems with the data:\n  - ")


def test_a_crash_after_a_refused_row_is_taken_for_its_consequence_and_any_other_is_not() -> None:
    from hpsearch.errors import Gathered, RowError, refuse_rows

    found = Gathered()
    with found.each():
        refuse_rows("train", [(4, "bad")])
        raise KeyError("the refused row's label")  # code that went on with the row it refused
    with found.each():
        raise DataError("a second problem")
    assert [str(p) for p in found.problems] == ["train row 4: bad", "a second problem"]
    with pytest.raises(KeyError), found.each():
        raise KeyError("a fault of the code")
    found.problems[:] = [RowError("train", 4, "bad")]
    with pytest.raises(RowError):  # one problem is raised as itself
        found.raise_any()
    with pytest.raises(RowError, match="alone"):  # outside a gathering, refuse_rows raises
        refuse_rows("train", [(1, "alone")])


def test_the_subsample_keeps_the_rows_of_the_seeded_shuffle(tmp_path: Path) -> None:
    """The rows a subsample keeps (and their order) are those of datasets' seeded shuffle, as in every earlier version:
    a study resumed after an upgrade scores its trials on the same rows."""
    from hpsearch.data.sources import load_source

    write_csv(tmp_path / "d.csv", classification_rows(100))
    spec = _spec(tmp_path, "  train: d.csv\n  subsample: {train: 20, seed: 5}")
    shuffled = load_source(spec.data.train).shuffle(seed=5).select(range(20))
    data = prepare_data(spec)
    assert data.train.columns["text"] == shuffled["text"]
    assert data.train.source_rows is not None and len(set(data.train.source_rows)) == 20


def test_a_problem_found_while_tokenizing_names_the_row_of_the_file(tmp_path: Path) -> None:
    from hpsearch.data.prepare import Split
    from hpsearch.data.tokencache import TokenCache
    from hpsearch.errors import RowError

    class Refuses:
        def cache_key(self) -> list[str]:
            return ["refuses"]

        def tokenize(self, split: Split, tokenizer: object, max_length: int) -> None:
            raise RowError(split.name, 1, "the question is too long; raise data.max_length")

    split = Split("train", {"question": ["a", "b", "c"]}, "fp", source_rows=[40, 12, 7], source="q.jsonl")
    with pytest.raises(DataError, match=r"^q\.jsonl: train row 12 \(counting data rows from 0\): the question is too long"):
        TokenCache(tmp_path).tokenize(split, Refuses(), object(), "tok", 64)  # type: ignore[arg-type]


def test_subsample_is_deterministic(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", classification_rows(100))
    spec = _spec(tmp_path, "  train: d.csv\n  subsample: {train: 20, seed: 5}")
    first, second = prepare_data(spec), prepare_data(spec)
    assert len(first.train) == 20
    assert first.train.columns == second.train.columns
    assert first.train.fingerprint == second.train.fingerprint


def test_jsonl_parquet_and_saved_folders_load_alike(tmp_path: Path) -> None:
    import datasets

    rows = classification_rows(20)
    write_jsonl(tmp_path / "d.jsonl", rows)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"]), "group": datasets.Value("string")})
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    fingerprints = {prepare_data(_spec(tmp_path, f"  train: {name}")).train.fingerprint for name in ("d.jsonl", "d.parquet", "saved")}
    assert len(fingerprints) == 1


def test_a_class_label_without_a_name_is_a_missing_label_not_the_last_class(tmp_path: Path) -> None:
    """Test splits of GLUE-style datasets store -1 where the label is withheld; read as an index it named the last class."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    datasets.Dataset.from_list([{"text": r["text"], "label": r["label"]} for r in classification_rows(20)], features=features).save_to_disk(
        str(tmp_path / "train"))
    datasets.Dataset.from_list([{"text": "good film", "label": 1}, {"text": "bad film", "label": -1}], features=features).save_to_disk(
        str(tmp_path / "test"))
    with pytest.raises(DataError, match=r"1 test row has a missing or empty label in column 'label' \(row 1,"):
        prepare_data(_spec(tmp_path, "  train: train\n  test: test"))


def test_unknown_suffix_says_how_to_fix(tmp_path: Path) -> None:
    from hpsearch.errors import SpecError

    (tmp_path / "d.txt").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(SpecError, match=r"cannot tell the format of d\.txt from its suffix '\.txt'.*\{path: d\.txt, format: csv\}"):
        _spec(tmp_path, "  train: d.txt")
    assert prepare_data(_spec(tmp_path, "  train: {path: d.txt, format: csv}")).train.columns["text"] == ["a", "b"]


def test_a_csv_with_another_separator_is_named_and_read_with_delimiter(tmp_path: Path) -> None:
    """Spreadsheets in many locales write ';' between fields: the header then reads as one column, and validate
    names the separator and the setting that reads the file."""
    from hpsearch.errors import SpecError

    rows = classification_rows(20)
    (tmp_path / "d.csv").write_text("text;label\n" + "".join(f"{r['text']};{r['label']}\n" for r in rows), encoding="utf-8")
    with pytest.raises(SpecError, match=r"reads as one column 'text;label'.*set data\.train: \{path: d\.csv, delimiter: ';'\}"):
        _spec(tmp_path, "  train: d.csv")
    data = prepare_data(_spec(tmp_path, "  train: {path: d.csv, delimiter: ';'}"))
    assert data.train.columns["text"] == [r["text"] for r in rows]
    (tmp_path / "d.json").write_text("[]")
    with pytest.raises(SpecError, match="'delimiter' applies to csv files only"):
        _spec(tmp_path, "  train: {path: d.json, delimiter: ';'}")


def test_a_byte_order_mark_does_not_hide_the_first_column(tmp_path: Path) -> None:
    """Spreadsheets' "CSV UTF-8" starts the file with a byte-order mark; the first column is still 'text'."""
    rows = classification_rows(20)
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8-sig")
    data = prepare_data(_spec(tmp_path, "  train: d.csv"))  # validate's header check passed it too
    assert data.train.columns["text"] == [r["text"] for r in rows]


def test_groups_come_from_the_group_column(tmp_path: Path, tiny_bert: Path) -> None:
    spec = load_spec(toy_study(tmp_path, tiny_bert, extra="cv: {folds: 3, group_column: group}\n"))
    data = prepare_data(spec)
    assert data.groups is not None and len(data.groups) == len(data.train) and set(data.groups) == {f"g{i}" for i in range(7)}


def test_a_row_without_a_group_is_named(tmp_path: Path) -> None:
    rows = [{**row, "group": "" if i in (3, 8) else f"g{i % 4}"} for i, row in enumerate(classification_rows(30))]
    write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: d.csv", extra="cv: {group_column: group}\n"))
    assert str(info.value) == (f"{tmp_path / 'd.csv'}: 2 train rows have a missing or empty group in column 'group' (rows 3, 8, "
                               "counting data rows from 0); give each of them its group (a row alone may take a value of its own) "
                               "or remove them")


def test_ner_tags_are_encoded_per_word(tmp_path: Path, tiny_bert: Path) -> None:
    spec = load_spec(toy_study(tmp_path, tiny_bert, task="token-classification", rows=10))
    data = prepare_data(spec)
    assert set(data.label_map.labels) == {"B-LOC", "B-PER", "O"}
    assert all(len(t) == len(w) for t, w in zip(data.train.columns["tags"], data.train.columns["tokens"]))


def test_rows_shared_by_train_and_test_are_counted(tmp_path: Path) -> None:
    train = classification_rows(30)
    test = train[:4] + classification_rows(6, seed=99)
    write_csv(tmp_path / "train.csv", train)
    write_csv(tmp_path / "test.csv", test)
    data = prepare_data(_spec(tmp_path, "  train: train.csv\n  test: test.csv"))
    expected = sum(1 for r in test if r["text"] in {t["text"] for t in train})
    assert expected >= 4
    assert data.warnings == [f"{expected} of 10 test rows also occur in the training data: their test scores are optimistic; remove them from one side"]


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", classification_rows(10))
    (tmp_path / "test.csv").write_text("text,label\n")
    with pytest.raises(DataError, match=r"test.csv has no data rows"):
        prepare_data(_spec(tmp_path, "  train: train.csv\n  test: test.csv"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty.jsonl has no data rows"):
        prepare_data(_spec(tmp_path, "  train: train.csv\n  test: empty.jsonl"))


def test_missing_or_empty_labels_are_an_error_with_their_rows(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label\ngood film,pos\nbad film,\nfine film,pos\ndull film,neg\nokay film, \n")
    with pytest.raises(DataError) as caught:
        prepare_data(_spec(tmp_path, "  train: d.csv"))
    message = str(caught.value)
    assert "d.csv: 2 train rows have a missing or empty label in column 'label' (rows 1, 4" in message
    assert "fill in the labels or remove those rows" in message and "None" not in message


def test_missing_tags_are_an_error_too(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "n.jsonl", [{"tokens": ["a", "b"], "tags": ["O", None]}, {"tokens": ["c"], "tags": ["O"]}])
    with pytest.raises(DataError, match=r"1 train row has a missing or empty tag in column 'tags' \(row 0"):
        prepare_data(_spec(tmp_path, "  train: n.jsonl", task="token-classification"))


@pytest.mark.parametrize("task, rows, said", [
    ("text-classification", [{"text": t, "label": "pos"} for t in ("good", "fine", "great")], "every label of the 3 train rows in column 'label' is 'pos'"),
    ("regression", [{"text": t, "label": 2.5} for t in ("good", "fine", "great")], "every label of the 3 train rows in column 'label' is 2.5"),
    ("token-classification", [{"tokens": ["a", "b"], "tags": ["O", "O"]}, {"tokens": ["c"], "tags": ["O"]}],
     "every tag of the 2 train rows in column 'tags' is 'O'"),
])
def test_training_targets_that_are_all_one_value_are_refused(tmp_path: Path, task: str, rows: list, said: str) -> None:
    path = tmp_path / "d.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(DataError) as caught:
        prepare_data(_spec(tmp_path, "  train: d.jsonl" + ("\n  labels: [neg, pos]" if task == "text-classification" else ""), task=task))
    assert str(caught.value).startswith(f"{path}: {said}: a model learns nothing from one value"), caught.value
    assert "add rows with other values" in str(caught.value)
    rows[0] = {"tokens": ["a"], "tags": ["B-PER"]} if task == "token-classification" else dict(rows[0], label={"regression": 1.0}.get(task, "neg"))
    write_jsonl(path, rows)
    assert len(prepare_data(_spec(tmp_path, "  train: d.jsonl", task=task)).train) == len(rows)


def test_a_validation_split_of_one_label_is_refused_and_a_test_split_of_one_is_warned_of(tmp_path: Path) -> None:
    """Every trial and the majority class scored macro-F1 1.0 on a validation split of positives only."""
    write_csv(tmp_path / "d.csv", classification_rows(30))
    write_csv(tmp_path / "one.csv", [r for r in classification_rows(12, seed=4) if r["label"] == "pos"])
    with pytest.raises(DataError) as caught:
        prepare_data(_spec(tmp_path, "  train: d.csv\n  validation: one.csv"))
    assert str(caught.value).startswith(f"{tmp_path / 'one.csv'}: every label of the 6 validation rows in column 'label' is 'pos': "
                                        "scores on it cannot tell a model that learned from one that predicts that value everywhere"), caught.value
    assert "or leave data.validation out to score by k-fold cross-validation" in str(caught.value)
    data = prepare_data(_spec(tmp_path, "  train: d.csv\n  test: one.csv"))
    assert data.warnings == ["every label of the 6 test rows in column 'label' is 'pos': the test macro_f1 measures how the final "
                             "model does on that one value only"], data.warnings


@pytest.mark.parametrize("name, content, said", [
    ("d.csv", "text,label\ngood,pos\ncaf\u00e9 bad,neg\n".encode("latin-1"), "line 3 holds the byte 0xe9; save the file as UTF-8 (from Windows-1252"),
    ("d.jsonl", '{"text": "good", "label": "pos"}\n{"text": "caf\u00e9", "label": "neg"}\n'.encode("latin-1"), "line 2 holds the byte 0xe9"),
    ("d.csv", "text,label\ngood,pos\nbad,neg\n".encode("utf-16"), "(it is UTF-16): line 1 holds the byte 0xff; save the file as UTF-8 (iconv -f utf-16"),
])
def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path, name: str, content: bytes, said: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as caught:
        prepare_data(_spec(tmp_path, f"  train: {name}"))
    assert str(caught.value).startswith(f"{tmp_path / name} is not UTF-8 text"), caught.value
    assert said in str(caught.value)
    (tmp_path / name).write_bytes(content.decode("utf-16" if b"\x00" in content else "latin-1").encode("utf-8-sig"))
    assert prepare_data(_spec(tmp_path, f"  train: {name}")).train.columns["text"][1] in ("bad", "caf\u00e9 bad", "caf\u00e9")


def test_entity_metrics_on_tags_without_an_outside_tag_are_refused_and_accuracy_is_not(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "n.jsonl", [{"tokens": ["a", "b"], "tags": [0, 1]}, {"tokens": ["c", "d"], "tags": [2, 0]}])
    with pytest.raises(DataError) as caught:
        prepare_data(_spec(tmp_path, "  train: n.jsonl", task="token-classification"))
    assert str(caught.value).startswith(f"{tmp_path / 'n.jsonl'}: search.metric f1 counts entities, the runs of tags between 'O' "
                                        "tags, but no training tag is 'O' (tags: '0', '1', '2'); write the tags as names"), caught.value
    write_jsonl(tmp_path / "n.jsonl", [{"tokens": ["a", "b"], "tags": ["DET", "NOUN"]}, {"tokens": ["c", "d"], "tags": ["VERB", "DET"]}])
    tagged = prepare_data(_spec(tmp_path, "  train: n.jsonl", task="token-classification", extra="search: {metric: accuracy}\n"))
    assert tagged.label_map.labels == ("DET", "NOUN", "VERB")


def test_a_label_that_is_a_list_is_refused_not_made_a_class(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": "pos"}, {"text": "odd", "label": ["pos", "neg"]}, {"text": "bad", "label": "neg"}])
    with pytest.raises(DataError, match=r"train row 1 \(counting data rows from 0\): label \"\['pos', 'neg'\]\" in 'label' is a list: "
                                        r"each row takes one label \(multi-label classification is not supported\)"):
        prepare_data(_spec(tmp_path, "  train: d.jsonl"))


def test_a_subsample_larger_than_its_split_is_reported(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", classification_rows(30))
    data = prepare_data(_spec(tmp_path, "  train: d.csv\n  subsample: {train: 50}"))
    assert len(data.train) == 30
    assert data.warnings == ["data.subsample.train asks for 50 rows but the train data has 30: all of them are used; lower "
                             "data.subsample.train to at most 30"]


def test_a_hub_dataset_that_cannot_be_had_says_what_to_check() -> None:
    import os
    import subprocess
    import sys

    code = ("from hpsearch.spec import DataSource\nfrom hpsearch.data.sources import load_source\n"
            "load_source(DataSource(hub='nobody/nothing', split='train'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hpsearch.errors.DataError: cannot load hub dataset 'nobody/nothing' (split 'train'): "), result.stderr
    assert "check its name, config and split and the connection" in last and "point the split's path at it" in last


def test_holdout_keeps_a_stratified_share_of_the_training_rows_out_as_the_test_split(tmp_path: Path) -> None:
    from collections import Counter

    rows = classification_rows(100, classes=2)
    rows[:20] = [{**row, "label": "pos"} for row in rows[:20]]  # 60 / 40: proportions a plain cut would not keep exactly
    write_csv(tmp_path / "d.csv", rows)
    data = prepare_data(_spec(tmp_path, "  train: d.csv\n  holdout: 0.2\n  subsample: {train: 90, seed: 1}"))
    train, test = data.train, data.splits["test"]
    assert (len(train), len(test)) == (72, 18)  # one row in 5 of the 90 the subsample keeps
    assert not set(train.source_rows) & set(test.source_rows) and len(set(train.source_rows) | set(test.source_rows)) == 90
    for split in (train, test):  # each example still names its row in the file
        assert split.columns["text"] == [rows[i]["text"] for i in split.source_rows]
    counts = {name: Counter(split.columns["label"]) for name, split in (("train", train), ("test", test))}
    whole = Counter(data.label_map.label2id[rows[i]["label"]] for i in [*train.source_rows, *test.source_rows])
    for label, n in whole.items():  # stratified: each class held out in its share, to a row
        assert abs(counts["test"][label] - n / 5) <= 1, (counts, whole)
    again = prepare_data(_spec(tmp_path, "  train: d.csv\n  holdout: 0.2\n  subsample: {train: 90, seed: 1}"))
    assert again.splits["test"].source_rows == test.source_rows  # seeded (cv.seed): the same rows every run


def test_holdout_keeps_groups_whole(tmp_path: Path, tiny_bert: Path) -> None:
    spec = load_spec(toy_study(tmp_path, tiny_bert, rows=70, extra="cv: {folds: 2, group_column: group}\n"))
    data = prepare_data(spec.model_copy(update={"data": spec.data.model_copy(update={"holdout": 0.25})}))
    rows = classification_rows(70)
    held = {rows[i]["group"] for i in data.splits["test"].source_rows}
    kept = {rows[i]["group"] for i in data.train.source_rows}
    assert held and kept and not held & kept, (held, kept)
    assert data.groups == [rows[i]["group"] for i in data.train.source_rows]  # the CV folds' groups follow the kept rows


def test_holdout_with_a_test_file_or_a_test_subsample_is_refused(tmp_path: Path) -> None:
    from hpsearch.errors import SpecError

    write_csv(tmp_path / "d.csv", classification_rows(30))
    with pytest.raises(SpecError, match="data.test is given too; remove one of them"):
        _spec(tmp_path, "  train: d.csv\n  test: d.csv\n  holdout: 0.2")
    with pytest.raises(SpecError, match="remove data.subsample.test"):
        _spec(tmp_path, "  train: d.csv\n  holdout: 0.2\n  subsample: {test: 5}")
    with pytest.raises(DataError, match=r"\{'neg': 3\}.*raise data.holdout"):  # one fold in 5 needs 5 rows of each class
        rows = classification_rows(40)
        write_csv(tmp_path / "d.csv", [r for r in rows if r["label"] == "pos"][:10] + [r for r in rows if r["label"] == "neg"][:3])
        prepare_data(_spec(tmp_path, "  train: d.csv\n  holdout: 0.2"))


def test_unquoted_separators_in_a_csv_are_named_not_read_as_other_columns(tmp_path: Path) -> None:
    """Texts with a comma that the file does not quote: a row with a field too many says which line; every row with
    one too many (pandas would take each row's first field for an index, silently) is refused too."""
    (tmp_path / "d.csv").write_text("text,label\ngood film,pos\nbad, awful film,neg\nfine,pos\nworst, ever, really,neg\n")
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: d.csv"))
    assert "Expected 2 fields in line 3, saw 3; a field that holds the separator ',' must be in double quotes" in str(info.value)
    (tmp_path / "d.csv").write_text("text,label\nbad, awful film,neg\nworst, ever,pos\n")
    with pytest.raises(DataError) as info:
        prepare_data(_spec(tmp_path, "  train: d.csv"))
    assert str(info.value) == (f"every data row of {tmp_path / 'd.csv'} has more fields than its header (text, label): a field that "
                               "holds the separator ',' must be in double quotes (a csv writer quotes it), or the header lacks a column name")
    (tmp_path / "d.csv").write_text('text,label\n"bad, awful film",neg\n"worst, ever",pos\n')  # quoted: read as meant
    assert prepare_data(_spec(tmp_path, "  train: d.csv")).train.columns["text"] == ["bad, awful film", "worst, ever"]


def test_many_training_rows_repeating_an_input_are_warned_of_with_the_fix(tmp_path: Path) -> None:
    from hpsearch.session import make_folds

    rows = [{"text": f"film number {i} was {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"} for i in range(100)]
    write_csv(tmp_path / "d.csv", rows + rows[:10])  # 10 copies: 9 % of 110 rows
    data = prepare_data(_spec(tmp_path, "  train: d.csv"))
    assert data.warnings == ["10 of 110 training rows (9.1 %) repeat another row's input: a copy in a fold's validation rows whose "
                             "twin is in its training rows makes the CV score optimistic; remove the copies, or set "
                             "cv.group_column: text to keep each input's copies in one fold"]
    spec = _spec(tmp_path, "  train: d.csv", extra="cv: {folds: 5, group_column: text}\n")
    data = prepare_data(spec)
    assert data.warnings == []
    texts = data.train.columns["text"]
    for train, held in make_folds(spec, data)[0]:  # what the warning proposes: no copy on both sides of a fold
        assert not {texts[i] for i in train} & {texts[i] for i in held}
    write_csv(tmp_path / "d.csv", rows + rows[:1])  # one copy in 101 rows: under 1 %, not worth a warning
    assert prepare_data(_spec(tmp_path, "  train: d.csv")).warnings == []


def test_a_validation_split_of_one_row_is_refused_with_the_fix(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", classification_rows(30))
    write_csv(tmp_path / "v.csv", classification_rows(1, seed=3))
    with pytest.raises(DataError, match=r"v.csv: 1 validation row: trials scored on a fixed validation split need at least 2.*"
                                        r"leave data.validation out") as info:
        prepare_data(_spec(tmp_path, "  train: d.csv\n  validation: v.csv"))
    assert type(info.value) is DataError  # alone: its one label goes without saying
    write_csv(tmp_path / "v.csv", classification_rows(2, seed=3))
    assert len(prepare_data(_spec(tmp_path, "  train: d.csv\n  validation: v.csv")).splits["validation"]) == 2


def test_an_unreachable_hub_says_offline_mode_reads_a_cached_copy_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from huggingface_hub import constants

    from hpsearch.data.sources import load_source
    from hpsearch.errors import DataError
    from hpsearch.spec import DataSource

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'someone/reviews' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=1 reads a copy cached by an earlier run without waiting"):
        load_source(DataSource(hub="someone/reviews", split="train"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # already offline: nothing to add
    with pytest.raises(DataError) as raised:
        load_source(DataSource(hub="someone/reviews", split="train"))
    assert "HF_HUB_OFFLINE" not in str(raised.value)

    def misspelt(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("Dataset 'someone/reveiws' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", misspelt)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(DataError) as raised:
        load_source(DataSource(hub="someone/reveiws", split="train"))
    assert "HF_HUB_OFFLINE" not in str(raised.value)  # reached, and told no
