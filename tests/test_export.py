"""Export: the row shape comes from --format, the container from the output's suffix."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from evoinstruct.store.errors import EvoError, InputError
from evoinstruct.store.export import ExportFilter, export, to_record
from evoinstruct.store.records import ExampleDraft
from tests.cli_helpers import run_cli

DRAFTS = [
    ExampleDraft(
        "Give three tips for staying healthy.", output="Eat well, sleep, move.", source="seed"
    ),
    ExampleDraft(
        "把句子翻译成英文。",
        "我喜欢读书。",
        "I like reading books.",
        system="你是一名翻译。",
        source="seed",
    ),
    ExampleDraft(
        "写一首诗。",
        output="春眠不觉晓。",
        source="seed",
        # Later turns of an imported conversation ride along in meta and are exported.
        meta={
            "extra_turns": [
                {"role": "user", "content": "再写一首。"},
                {"role": "assistant", "content": "床前明月光。"},
            ]
        },
    ),
    ExampleDraft("Summarize the text.", "A long text about rivers.", None, source="seed"),
]

SHAPES = ("alpaca", "sharegpt", "openai")
SUFFIXES = (".json", ".jsonl", ".parquet")


@pytest.fixture
def filled(store):
    store.add_candidates(DRAFTS, round=0)
    return store


def expected(store, fmt: str) -> list[dict[str, Any]]:
    return [to_record(e, fmt) for e in store.iter_examples()]


def read_back(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return json.loads(text)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("fmt", SHAPES)
def test_every_shape_round_trips_through_every_container(
    filled, tmp_path: Path, fmt: str, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    count = export(filled, fmt, out, ExportFilter(statuses=["all"]))
    rows = expected(filled, fmt)
    assert count == len(rows) == 4
    assert read_back(out) == rows
    head = out.read_bytes()[:4]
    assert (head == b"PAR1") == (suffix == ".parquet")
    assert not list(tmp_path.glob(".*.partial"))


def test_chat_rows_in_parquet_load_with_datasets(filled, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "chat.parquet"
    export(filled, "sharegpt", out, ExportFilter(statuses=["all"]))
    data = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert set(data.column_names) == {"conversations", "system"}
    poem = next(r for r in data if r["conversations"][0]["value"] == "写一首诗。")
    assert [t["from"] for t in poem["conversations"]] == ["human", "gpt", "human", "gpt"]


def test_parquet_with_lineage_keeps_types(filled, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "lineage.parquet"
    export(filled, "openai", out, ExportFilter(statuses=["all"]), with_lineage=True)
    table = pq.read_table(out)
    assert str(table.schema.field("round").type) == "int64"
    assert str(table.schema.field("parent_id").type) == "string"  # all null, still typed
    ids = {e.id for e in filled.iter_examples()}
    assert {r["id"] for r in table.to_pylist()} == ids


@pytest.mark.parametrize("fmt", [*SHAPES, "parquet"])
def test_an_empty_export_still_has_its_columns(store, tmp_path: Path, fmt: str) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "empty.parquet"
    assert export(store, fmt, out) == 0
    columns = {
        "alpaca": ["instruction", "input", "output", "system"],
        "parquet": ["instruction", "input", "output", "system"],
        "sharegpt": ["conversations", "system"],
        "openai": ["messages"],
    }[fmt]
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == columns


def test_format_parquet_is_alpaca_rows_in_parquet(filled, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    export(filled, "parquet", out, ExportFilter(statuses=["all"]))
    assert read_back(out) == expected(filled, "alpaca")


@pytest.mark.parametrize("name", ["out.csv", "out.txt", "out", "out.json.gz", "out.parquet.tmp"])
def test_an_unsupported_suffix_is_refused_and_nothing_written(
    filled, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "new_dir" / name
    with pytest.raises(InputError) as info:
        export(filled, "sharegpt", out)
    message = str(info.value)
    assert str(out) in message and ".json" in message and ".jsonl" in message
    assert ".parquet" in message
    assert info.value.exit_code == 2
    assert not (tmp_path / "new_dir").exists()


def test_format_parquet_to_a_json_name_is_refused(filled, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError, match="--format parquet writes Parquet"):
        export(filled, "parquet", out)
    assert not out.exists()


def test_cli_writes_what_the_suffix_says(project_dir: Path, tmp_path: Path, capsys) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "\n".join(
            json.dumps({"instruction": d.instruction, "input": d.input, "output": d.output or ""})
            for d in DRAFTS
        ),
        encoding="utf-8",
    )
    assert run_cli(capsys, "seed", "add", seeds, "-p", project_dir).code == 0
    out = tmp_path / "x.parquet"
    result = run_cli(capsys, "export", "-f", "sharegpt", "-o", out, "-p", project_dir)
    assert result.code == 0, result.err
    assert out.read_bytes()[:4] == b"PAR1" and len(read_back(out)) == 3  # accepted only

    bad = tmp_path / "x.csv"
    result = run_cli(capsys, "export", "-f", "sharegpt", "-o", bad, "-p", project_dir)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert str(bad) in result.err and ".jsonl" in result.err and ".parquet" in result.err
    assert not bad.exists() and not list(tmp_path.glob(".x.csv*"))


# --- what export writes over, and how it fails ----------------------------------------------


def no_partials(*directories: Path) -> bool:
    return not any(list(d.glob(".*.partial")) for d in directories if d.is_dir())


def test_a_symlink_is_written_through_to_its_target(filled, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    target = real / "data.jsonl"
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert export(filled, "alpaca", link, ExportFilter(statuses=["all"])) == 4
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert read_back(target) == expected(filled, "alpaca")
    assert no_partials(tmp_path, real)


def test_a_dangling_symlink_gets_its_target_created(filled, tmp_path: Path) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "new.jsonl")
    export(filled, "alpaca", link)
    assert link.is_symlink() and len(read_back(tmp_path / "new.jsonl")) == 3


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _device(path: Path) -> Path:
    try:  # /dev/full's numbers: the device the review turned into a regular file
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 7))
    except (PermissionError, AttributeError):
        pytest.skip("creating a device node needs root")
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("make", "what"),
    [(_fifo, "a FIFO"), (_device, "a character device"), (_directory, "a directory")],
)
@pytest.mark.parametrize("through_link", [False, True])
def test_a_target_that_is_no_regular_file_is_refused(
    filled, tmp_path: Path, make, what: str, through_link: bool
) -> None:
    special = make(tmp_path / "special.jsonl")
    out = special
    if through_link:
        out = tmp_path / "link.jsonl"
        out.symlink_to(special)
    mode = os.lstat(special).st_mode
    with pytest.raises(InputError) as info:
        export(filled, "alpaca", out)
    assert info.value.exit_code == 2 and what in str(info.value) and str(out) in str(info.value)
    assert os.lstat(special).st_mode == mode  # still what it was
    assert no_partials(tmp_path)


def test_cli_refuses_a_fifo_in_one_line(project_dir: Path, tmp_path: Path, capsys) -> None:
    fifo = _fifo(tmp_path / "pipe.jsonl")
    result = run_cli(capsys, "export", "-o", fifo, "-p", project_dir)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "a FIFO" in result.err and stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("name", ["/proc/nope.jsonl", "/proc/nope/x.jsonl"])
def test_a_place_no_file_can_be_made_is_an_input_error(
    project_dir: Path, capsys, name: str
) -> None:
    result = run_cli(capsys, "export", "-o", name, "-p", project_dir, "--no-card")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert name in result.err and "Traceback" not in result.err


def test_a_path_through_a_file_is_an_input_error(filled, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="Not a directory"):
        export(filled, "alpaca", tmp_path / "file" / "x.jsonl")


def _failing_open(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    real_open = os.open

    def fake_open(path, flags, mode=0o777, *args, **kwargs):
        if str(path).endswith(".partial"):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")],
)
def test_an_unwritable_place_is_an_input_error(
    filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    _failing_open(monkeypatch, code)
    out = tmp_path / "new" / "x.jsonl"
    with pytest.raises(InputError) as info:
        export(filled, "alpaca", out)
    assert info.value.exit_code == 2 and words in str(info.value)
    assert not (tmp_path / "new").exists()  # the directory made for it is gone again


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_an_input_error(filled, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="Permission denied"):
            export(filled, "alpaca", folder / "x.jsonl")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_full_disk_is_a_runtime_error_and_leaves_the_old_file(
    filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "x.jsonl"
    out.write_text("old\n", encoding="utf-8")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    for target in (out, tmp_path / "a" / "b" / "y.parquet"):
        with pytest.raises(EvoError) as info:
            export(filled, "alpaca", target)
        assert info.value.exit_code == 1 and not isinstance(info.value, InputError)
        assert "No space left on device" in str(info.value)
    assert out.read_text(encoding="utf-8") == "old\n"
    assert not (tmp_path / "a").exists() and no_partials(tmp_path)


def test_cli_reports_a_full_disk_in_one_line(
    project_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "")))
    result = run_cli(capsys, "export", "-o", tmp_path / "d" / "x.jsonl", "-p", project_dir)
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1, result.err
    assert "No space left on device" in result.err and not (tmp_path / "d").exists()


def test_replacing_a_file_keeps_its_permissions(filled, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    out.write_text("[]", encoding="utf-8")
    out.chmod(0o640)
    export(filled, "openai", out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and len(read_back(out)) == 3


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A real 16 KiB file system (root, where mounting is allowed), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "mnt"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(point)]).returncode:
        pytest.skip("this container may not mount")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


def test_a_real_full_and_read_only_file_system(tiny_tmpfs: Path, store) -> None:
    store.add_candidates(
        [ExampleDraft(f"Task {i}: " + "words " * 40, output="x " * 60) for i in range(60)],
        round=0,
        status="accepted",
    )
    with pytest.raises(EvoError) as info:
        export(store, "alpaca", tiny_tmpfs / "x.jsonl")
    assert info.value.exit_code == 1 and "No space left" in str(info.value)
    assert list(tiny_tmpfs.iterdir()) == []
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    with pytest.raises(InputError, match="Read-only file system"):
        export(store, "alpaca", tiny_tmpfs / "y.jsonl")
