"""Tests for the PhysioNet 2012 reader, on five real stays of set-a and on broken files."""

import hashlib
import importlib.util
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentode.datasets.physionet import (
    DESCRIPTORS,
    OUTCOME_COLUMNS,
    VARIABLES,
    load_physionet2012,
)

DATA = Path(__file__).parent / "data" / "physionet2012"
TARBALL = DATA / "set-a.tar.gz"
DIRECTORY = DATA / "set-a"
OUTCOMES = DATA / "Outcomes-a.txt"
RECORD_IDS = [134253, 135116, 137392, 138754, 140501]
ROWS_PER_STAY = [10, 8, 3, 37, 1]  # distinct minutes per file, counted with `cut -d, -f1 | sort -u`
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded():
    return load_physionet2012(TARBALL, outcomes=OUTCOMES, return_static=True)


def stay(tmp_path, name, *rows, header="Time,Parameter,Value", newline="\n"):
    """Write a stay file made of ``header`` and ``rows``; return its path."""
    path = tmp_path / name
    path.write_bytes(newline.join([header, *rows, ""]).encode())
    return path


def minimal(record_id=7, *rows):
    return (f"00:00,RecordID,{record_id}", "00:00,Age,60", *rows)


# --------------------------------------------------------------------------- real stays


def test_tarball_and_directory_give_identical_frames(loaded):
    long, static = loaded
    long_dir, static_dir = load_physionet2012(DIRECTORY, outcomes=OUTCOMES, return_static=True)
    pd.testing.assert_frame_equal(long, long_dir)
    pd.testing.assert_frame_equal(static, static_dir)


def test_columns_dtypes_order_and_index(loaded):
    long, _ = loaded
    assert list(long.columns) == ["RecordID", "Time", *VARIABLES]
    assert len(VARIABLES) == 41
    assert long["RecordID"].dtype == np.int64
    assert (long.dtypes.iloc[1:] == np.float64).all()
    assert isinstance(long.index, pd.RangeIndex) and long.index.start == 0
    assert long.groupby("RecordID").size().tolist() == ROWS_PER_STAY
    assert long.equals(long.sort_values(["RecordID", "Time"], ignore_index=True))


def test_return_type_depends_on_return_static_only(loaded):
    long = load_physionet2012(TARBALL)
    assert isinstance(long, pd.DataFrame)
    pd.testing.assert_frame_equal(long, loaded[0])


def test_one_small_stay_exactly(loaded):
    long, _ = loaded
    got = long[long["RecordID"] == 137392].set_index("Time")
    expected = pd.DataFrame(np.nan, index=[0.0, 832 / 60, 2272 / 60], columns=list(VARIABLES))
    expected.loc[0.0, ["Age", "ICUType"]] = [43, 3]  # Gender, Height, Weight are -1
    lab = ["Albumin", "BUN", "Creatinine", "Glucose", "HCO3", "HCT", "Mg", "Platelets", "K", "Na",
           "WBC"]  # fmt: skip
    expected.loc[832 / 60, lab] = [3.6, 17, 1.1, 127, 27, 40.3, 1.7, 230, 4.6, 146, 9.7]
    expected.loc[2272 / 60, lab] = [np.nan, 17, 1, 88, 29, 42.9, np.nan, 226, 4.9, 144, 12.5]
    pd.testing.assert_frame_equal(got.drop(columns="RecordID"), expected, check_names=False)


def test_same_minute_duplicates_are_averaged(loaded):
    long, _ = loaded
    # 135116.txt, 33:54: HCT 21.1 and 34, Platelets 28 and 21, WBC 0.9 and 0.6; Na once (133).
    row = long[(long["RecordID"] == 135116) & (long["Time"] == (33 * 60 + 54) / 60)]
    assert len(row) == 1
    assert row[["HCT", "Platelets", "WBC", "Na"]].iloc[0].tolist() == [
        (21.1 + 34) / 2, (28 + 21) / 2, (0.9 + 0.6) / 2, 133.0,
    ]  # fmt: skip
    # 134253.txt, 08:07: TroponinT 0.12 and 0.08.
    row = long[(long["RecordID"] == 134253) & (long["Time"] == (8 * 60 + 7) / 60)]
    assert row["TroponinT"].tolist() == [(0.12 + 0.08) / 2]


def test_time_zero_row_mixes_descriptors_and_time_series(loaded):
    long, _ = loaded
    first = long[long["RecordID"] == 138754].iloc[0]
    assert first["Time"] == 0.0
    assert first[list(DESCRIPTORS)].tolist() == [76, 0, 157.5, 1, 91.4]
    assert first[["GCS", "HR", "NIMAP", "Temp"]].tolist() == [15, 65, 78.33, 36.9]
    # Weight also recurs as a time series: the file's line 152 is 34:45,Weight,92.4
    at = (long["RecordID"] == 138754) & (long["Time"] == (34 * 60 + 45) / 60)
    assert long.loc[at, "Weight"].tolist() == [92.4]


def test_unknown_descriptors_become_nan_and_static_frame(loaded):
    _, static = loaded
    assert list(static.columns) == [*DESCRIPTORS, *OUTCOME_COLUMNS]
    assert static.index.name == "RecordID" and static.index.tolist() == RECORD_IDS
    expected = pd.DataFrame(
        {"Age": [90, 49, 43, 76, 31], "Gender": [1, 0, np.nan, 0, 1],
         "Height": [np.nan, np.nan, np.nan, 157.5, np.nan], "ICUType": [2, 3, 3, 1, 3],
         "Weight": [np.nan, np.nan, np.nan, 91.4, np.nan]},
        index=pd.Index(RECORD_IDS, name="RecordID"), dtype=np.float64,
    )  # fmt: skip
    pd.testing.assert_frame_equal(static[list(DESCRIPTORS)], expected)


def test_outcomes_are_joined_verbatim(loaded):
    _, static = loaded
    assert static.loc[138754, list(OUTCOME_COLUMNS)].tolist() == [8, 1, 5, -1, 0]
    assert static.loc[140501, list(OUTCOME_COLUMNS)].tolist() == [-1, -1, -1, -1, 0]
    assert (static[list(OUTCOME_COLUMNS)].dtypes == np.int64).all()


def test_static_without_outcomes(loaded):
    _, static = load_physionet2012(DIRECTORY, return_static=True)
    pd.testing.assert_frame_equal(static, loaded[1][list(DESCRIPTORS)])


# --------------------------------------------------------------------------- value rules


def test_minus_one_rule_and_other_negatives_kept(tmp_path):
    stay(tmp_path, "7.txt", "00:00,RecordID,7", "00:00,Age,-1", "00:00,Weight,-1",
         "01:00,Weight,-1", "01:00,Temp,-17.8", "01:00,HR,-1", "02:00,Weight,0",
         "02:00,Weight,-1")  # fmt: skip
    long, static = load_physionet2012(tmp_path, return_static=True)
    assert long["Time"].tolist() == [1.0, 2.0]  # the time-0 row held only unknowns
    assert long[["Weight", "Temp", "HR"]].iloc[0].tolist()[1:] == [-17.8, -1.0]
    assert np.isnan(long["Weight"].iloc[0])
    assert long["Weight"].iloc[1] == 0.0  # -1 is dropped before averaging
    assert static.loc[7].isna().all()


def test_stay_with_only_unknowns_stays_in_static_frame(tmp_path):
    stay(tmp_path, "7.txt", "00:00,RecordID,7", "00:00,Age,-1")
    stay(tmp_path, "8.txt", *minimal(8))
    long, static = load_physionet2012(tmp_path, return_static=True)
    assert long["RecordID"].tolist() == [8]
    assert static.index.tolist() == [7, 8]
    assert static["Age"].isna().tolist() == [True, False]


def test_crlf_and_blank_lines_parse_like_lf(tmp_path):
    rows = ("00:00,RecordID,7", "00:00,Age,60", "00:07,HR,73", "00:07,HR,74")
    lf_dir, crlf_dir = tmp_path / "lf", tmp_path / "crlf"
    lf_dir.mkdir()
    crlf_dir.mkdir()
    stay(lf_dir, "7.txt", *rows)
    stay(crlf_dir, "7.txt", *rows[:2], "", *rows[2:], "", newline="\r\n")
    lf = load_physionet2012(lf_dir)
    pd.testing.assert_frame_equal(lf, load_physionet2012(crlf_dir))
    assert lf["Time"].tolist() == [0.0, 7 / 60] and lf["HR"].iloc[1] == 73.5


def test_unknown_parameter_raise_or_ignore(tmp_path):
    path = stay(tmp_path, "7.txt", *minimal(7, "00:07,Foo,1", "00:07,HR,73"))
    where = re.escape(str(path))
    with pytest.raises(ValueError, match=rf"{where}, line 4 .*unknown parameter 'Foo'"):
        load_physionet2012(tmp_path)
    with pytest.warns(UserWarning) as record:
        long = load_physionet2012(tmp_path, unknown="ignore")
    assert long["HR"].tolist()[1] == 73.0 and len(long) == 2
    assert len(record) == 1
    assert re.match(rf"dropped 1 row\(s\): 1 with an unknown parameter \('Foo'; unknown='ignore'\), "
                    rf"first {where}, line 4", str(record[0].message))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("00:07,HR,73,1", "expected 3 comma-separated fields, found 4"),
        ("00:07,HR", "expected 3 comma-separated fields, found 2"),
        ("   ", "expected 3 comma-separated fields, found 1"),
        ("0:7,HR,73", "Time is not HH:MM"),
        ("00:75,HR,73", "Time is not HH:MM"),
        ("ab:cd,HR,73", "Time is not HH:MM"),
        ("1234:00,HR,73", "Time is not HH:MM"),
        ("00:07,HR,7\r3", "carriage return inside a line"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, row, message):
    stay(tmp_path, "5.txt", *minimal(5))
    path = stay(tmp_path, "7.txt", *minimal(7, "00:05,HR,70", row))
    where = re.escape(str(path))
    with pytest.raises(ValueError, match=rf"{where}, line 5\b.*{re.escape(message)}"):
        load_physionet2012(tmp_path)


@pytest.mark.parametrize(
    ("row", "message", "reason"),
    [
        ("00:07,HR,abc", "Value is not a finite number", "missing or non-numeric value"),
        ("00:07,HR,", "Value is not a finite number", "missing or non-numeric value"),
        ("00:07,HR,inf", "Value is not a finite number", "missing or non-numeric value"),
        ("00:07,HR,\"73\"", "Value is not a finite number", "missing or non-numeric value"),
        ("06:32,,2.7", "empty parameter name", "empty parameter name"),
        ("06:32,,", "empty parameter name", "empty parameter name"),
    ],
)
def test_malformed_row_skipped_with_a_warning_or_raised_when_strict(tmp_path, row, message, reason):
    stay(tmp_path, "5.txt", *minimal(5))
    path = stay(tmp_path, "7.txt", *minimal(7, "00:05,HR,70", row))
    where = re.escape(str(path))
    with pytest.raises(ValueError, match=rf"{where}, line 5\b.*{re.escape(message)}"):
        load_physionet2012(tmp_path, strict=True)
    with pytest.warns(UserWarning, match=rf"dropped 1 row\(s\): 1 with an? {reason} in 1 file\(s\), first {where}, line 5"):
        long = load_physionet2012(tmp_path)
    assert long["HR"].dropna().tolist() == [70.0]
    assert len(long) == 3  # the time-0 rows of both stays and 00:05; the malformed row left nothing


def test_official_empty_parameter_lines_load_with_the_defaults():
    """Lines like set-c's ``06:32,,2.7`` (2,403 of them in 1,594 of its 4,000 files) are skipped and counted."""
    fixture = DATA / "set-c-like"  # two stays written in the official format, with such lines
    with pytest.warns(UserWarning) as record:
        long = load_physionet2012(fixture)
    assert len(record) == 1  # one warning for every dropped row
    text = str(record[0].message)
    assert text.startswith("dropped 4 row(s): 3 with an empty parameter name in 2 file(s)")
    assert "1 with a missing or non-numeric value in 1 file(s)" in text and "900002.txt, line 9" in text
    assert long["RecordID"].unique().tolist() == [900001, 900002]
    assert long.loc[long["RecordID"] == 900001, "K"].dropna().tolist() == [4.1]
    assert long["Temp"].isna().all() and long["HR"].dropna().tolist() == [73.0, 88.0]
    with pytest.raises(ValueError, match=r"900001.txt, line 9 \('06:32,,2.7'\): empty parameter name"):
        load_physionet2012(fixture, strict=True)


def test_malformed_member_of_archive_is_named(tmp_path):
    archive = tmp_path / "set-x.tar.gz"
    data = "Time,Parameter,Value\n00:00,RecordID,7\n00:07,HR,x\n".encode()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("set-x/7.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=rf"{re.escape(str(archive))}:set-x/7.txt, line 3"):
        load_physionet2012(archive, strict=True)


def test_bad_header(tmp_path):
    path = stay(tmp_path, "7.txt", *minimal(7), header="Time,Value,Parameter")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line 1: expected the header"):
        load_physionet2012(tmp_path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (("00:00,Age,60",), "no RecordID row"),
        (("00:00,RecordID,7", "00:00,RecordID,7"), r"line 3 .*a second RecordID row"),
        (("00:00,RecordID,7.5",), "RecordID is not a non-negative integer"),
    ],
)
def test_record_id_rows(tmp_path, rows, message):
    path = stay(tmp_path, "7.txt", *rows)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*{message}"):
        load_physionet2012(tmp_path)


def test_record_id_in_two_files(tmp_path):
    stay(tmp_path, "7.txt", *minimal(7))
    stay(tmp_path, "8.txt", *minimal(7))
    with pytest.raises(ValueError, match=r"RecordID 7 appears in two files: .*7.txt and .*8.txt"):
        load_physionet2012(tmp_path)


def test_empty_files_are_skipped_with_a_warning(tmp_path):
    (tmp_path / "1.txt").write_bytes(b"")
    stay(tmp_path, "2.txt")  # header only
    stay(tmp_path, "7.txt", *minimal(7))
    with pytest.warns(UserWarning, match=r"skipped 2 empty stay file\(s\): .*1.txt, .*2.txt"):
        long, static = load_physionet2012(tmp_path, return_static=True)
    assert static.index.tolist() == [7] and long["RecordID"].tolist() == [7]


def test_only_empty_files(tmp_path):
    (tmp_path / "1.txt").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="every stay file is empty"):
        load_physionet2012(tmp_path)


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.tar.gz"))):
        load_physionet2012(tmp_path / "nope.tar.gz")
    with pytest.raises(ValueError, match="holds no '<RecordID>.txt' stay files"):
        load_physionet2012(DATA)  # the parent of set-a/
    with pytest.raises(ValueError, match="neither a directory nor a tar archive"):
        load_physionet2012(OUTCOMES)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        load_physionet2012(123)


def test_bad_arguments():
    message = "unknown must be one of ('raise', 'ignore'), got 'skip'"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_physionet2012(TARBALL, unknown="skip")
    with pytest.raises(ValueError, match="pass return_static=True"):
        load_physionet2012(TARBALL, outcomes=OUTCOMES)
    with pytest.raises(TypeError, match="strict must be True or False"):
        load_physionet2012(TARBALL, strict="yes")


def test_bad_outcomes(tmp_path):
    with pytest.raises(FileNotFoundError, match="outcomes"):
        load_physionet2012(TARBALL, outcomes=tmp_path / "none.txt", return_static=True)
    lines = OUTCOMES.read_text().splitlines()
    short = tmp_path / "short.txt"
    short.write_text("\n".join(lines[:-1]) + "\n")
    message = "no row for 1 loaded stay(s), e.g. RecordID [140501]"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_physionet2012(TARBALL, outcomes=short, return_static=True)
    no_sofa = tmp_path / "no_sofa.txt"
    no_sofa.write_text("\n".join(line.rsplit(",", 4)[0] for line in lines) + "\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['SOFA'"):
        load_physionet2012(TARBALL, outcomes=no_sofa, return_static=True)
    twice = tmp_path / "twice.txt"
    twice.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(ValueError, match="RecordID 134253 appears more than once"):
        load_physionet2012(TARBALL, outcomes=twice, return_static=True)


# --------------------------------------------------------------------------- fetch script


def _fetch_module():
    spec = importlib.util.spec_from_file_location(
        "fetch_physionet2012", REPO / "datasets" / "physionet2012" / "fetch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_copies_and_verifies(tmp_path):
    fetch = _fetch_module()
    local, dest = tmp_path / "local", tmp_path / "dest"
    local.mkdir()
    (local / "x.txt").write_bytes(b"data\n")
    digest = hashlib.sha256(b"data\n").hexdigest()
    argv, files = ["--dest", str(dest), "--local", str(local)], {"x.txt": (digest, digest)}
    assert fetch.main(argv, files=files) == 0
    assert (dest / "x.txt").read_bytes() == b"data\n"
    (local / "x.txt").write_bytes(b"changed\n")
    (dest / "x.txt").unlink()
    assert fetch.main(argv, files=files) == 1
    assert not (dest / "x.txt").exists()


def test_fetch_accepts_a_repacked_archive(tmp_path):
    fetch = _fetch_module()
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(DIRECTORY, arcname="set-a")
    archive_digest = fetch.sha256_file(archive)
    content = fetch.content_digest(archive)
    assert content == fetch.content_digest(TARBALL) and archive_digest != fetch.sha256_file(TARBALL)
    assert fetch.verify(TARBALL, (archive_digest, content)) == "content"
    with pytest.raises(ValueError, match="checksum mismatch"):
        fetch.verify(TARBALL, (archive_digest, "0" * 64))


def reference_long(directory):
    """A slow, obvious reader of the same rules, to check the vectorised one against."""
    cells = {}
    for path in sorted(directory.glob("*.txt")):
        lines = path.read_text().splitlines()[1:]
        rid = next(int(value) for _, name, value in (line.split(",") for line in lines)
                   if name == "RecordID")  # fmt: skip
        for line in lines:
            time, name, value = line.split(",")
            hours, minutes = time.split(":")
            if name == "RecordID" or (name in DESCRIPTORS and float(value) == -1):
                continue
            key = (rid, (int(hours) * 60 + int(minutes)) / 60)
            cells.setdefault(key, {}).setdefault(name, []).append(float(value))
    rows = [{"RecordID": rid, "Time": time, **{k: sum(v) / len(v) for k, v in cell.items()}}
            for (rid, time), cell in sorted(cells.items())]  # fmt: skip
    frame = pd.DataFrame(rows).reindex(columns=["RecordID", "Time", *VARIABLES])
    return frame.astype({"RecordID": np.int64, **{v: np.float64 for v in VARIABLES}})


def test_matches_a_plain_python_reader(loaded):
    pd.testing.assert_frame_equal(loaded[0], reference_long(DIRECTORY))
