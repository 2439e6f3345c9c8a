"""Each annotation adapter reads a small file in its dataset's public format."""
import json
import pathlib

import pytest

from vlsa_jax.data.annotations import ClipAnnotation
from vlsa_jax.data.datasets import ADAPTERS, common, get_adapter, read_annotations

_LSMDC_CLIP = "0001_American_Beauty_00.00.51.926-00.00.54.129"


def _touch(media_dir: pathlib.Path, *relative_paths: str) -> None:
    """Empty placeholder media files, where an adapter looks files up by stem."""
    for relative in relative_paths:
        path = media_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _write(path: pathlib.Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def _ids(clips):
    return [clip.clip_id for clip in clips]


# --- Registry -------------------------------------------------------------------------


def test_registry_names_and_modalities():
    assert {name: adapter.modalities for name, adapter in ADAPTERS.items()} == {
        "generic": "avt", "msrvtt": "avt", "lsmdc": "avt", "youcook2": "avt",
        "howto100m": "avt", "audiocaps": "at", "sounddescs": "at",
    }
    assert all(adapter.name == name for name, adapter in ADAPTERS.items())


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="'kinetics'.*audiocaps, generic, howto100m"):
        get_adapter("kinetics")


# --- generic --------------------------------------------------------------------------


def test_generic_csv_captions_list_and_times(tmp_path):
    path = _write(tmp_path / "clips.csv",
                  "id,path,captions,start,end\n"
                  "a,videos/a.mp4,first | second|third,1.5,4\n"
                  'b,/abs/b.wav,"only, one",,\n')
    clips = read_annotations("generic", path, str(tmp_path), "train")
    assert clips == [
        ClipAnnotation("a", "videos/a.mp4", ("first", "second", "third"), 1.5, 4.0),
        ClipAnnotation("b", "/abs/b.wav", ("only, one",), None, None),
    ]


def test_generic_csv_single_caption_column_keeps_pipes_and_empty_captions(tmp_path):
    path = _write(tmp_path / "clips.csv", "id,path,caption\na,a.mp4,x | y\nb,b.mp4,\n")
    clips = read_annotations("generic", path, "", "any")
    assert [clip.captions for clip in clips] == [("x | y",), ("",)]


def test_generic_csv_filters_by_split_column(tmp_path):
    path = _write(tmp_path / "clips.csv",
                  "id,path,caption,split\na,a.mp4,A,train\nb,b.mp4,B,test\nc,c.mp4,C,train\n")
    assert _ids(read_annotations("generic", path, "", "train")) == ["a", "c"]
    assert _ids(read_annotations("generic", path, "", "test")) == ["b"]
    with pytest.raises(ValueError, match="clips.csv has no split 'val'; valid splits: test, train"):
        read_annotations("generic", path, "", "val")


def test_generic_jsonl_caption_and_captions(tmp_path):
    lines = [
        {"id": "a", "path": "a.mp4", "captions": ["one", "two"], "start": 2, "end": None},
        {"id": 7, "path": "sub/b.mp4", "caption": "three"},
        {"id": "c", "path": "c.mp4", "captions": []},
    ]
    path = _write(tmp_path / "clips.jsonl",
                  "\n".join(json.dumps(line) for line in lines) + "\n\n")
    clips = read_annotations("generic", path, "", "ignored")
    assert clips == [
        ClipAnnotation("a", "a.mp4", ("one", "two"), 2.0, None),
        ClipAnnotation("7", "sub/b.mp4", ("three",)),
        ClipAnnotation("c", "c.mp4", ()),
    ]


def test_generic_jsonl_filters_by_split_key(tmp_path):
    lines = [{"id": "a", "path": "a", "caption": "", "split": "val"},
             {"id": "b", "path": "b", "caption": "", "split": "train"}]
    path = _write(tmp_path / "clips.jsonl", "\n".join(json.dumps(line) for line in lines))
    assert _ids(read_annotations("generic", path, "", "val")) == ["a"]


def test_generic_rejects_other_extensions_and_ambiguous_captions(tmp_path):
    with pytest.raises(ValueError, match="neither .csv nor .jsonl"):
        read_annotations("generic", _write(tmp_path / "clips.txt", ""), "", "train")
    both = _write(tmp_path / "both.csv", "id,path,caption,captions\na,a,x,y\n")
    with pytest.raises(ValueError, match="exactly one of 'caption' and 'captions'"):
        read_annotations("generic", both, "", "train")


# --- msrvtt ---------------------------------------------------------------------------


def _msrvtt_json(videos, sentences):
    return json.dumps({
        "info": {"year": 2016},
        "videos": [{"video_id": v, "split": s, "start time": 137.72, "end time": 149.44,
                    "category": 9, "url": "https://www.youtube.com/watch?v=x", "id": i}
                   for i, (v, s) in enumerate(videos)],
        "sentences": [{"video_id": v, "caption": c, "sen_id": n} for v, c, n in sentences],
    })


def _msrvtt_fixture(tmp_path):
    videos = [("video0", "train"), ("video1", "validate"), ("video2", "train"),
              ("video3", "test")]
    # Sentences interleaved across videos and out of sen_id order, as grouping must cope.
    sentences = [("video0", f"v0 caption {n}", n) for n in (3, 0, 2)]
    sentences += [("video2", "v2 caption 5", 5), ("video1", "v1 caption 4", 4),
                  ("video0", "v0 caption 1", 1), ("video3", "v3 caption 6", 6)]
    return _write(tmp_path / "videodatainfo.json", _msrvtt_json(videos, sentences))


def test_msrvtt_groups_captions_per_video_in_sen_id_order(tmp_path):
    path = _msrvtt_fixture(tmp_path)
    clips = read_annotations("msrvtt", path, str(tmp_path), "train")
    assert clips == [
        ClipAnnotation("video0", "video0.mp4",
                       ("v0 caption 0", "v0 caption 1", "v0 caption 2", "v0 caption 3")),
        ClipAnnotation("video2", "video2.mp4", ("v2 caption 5",)),
    ]
    assert _ids(read_annotations("msrvtt", path, "", "val")) == ["video1"]
    assert _ids(read_annotations("msrvtt", path, "", "test")) == ["video3"]


def test_msrvtt_folder_with_2017_train_val_and_test_files(tmp_path):
    _write(tmp_path / "train_val_videodatainfo.json",
           _msrvtt_json([("video0", "train"), ("video1", "validate")],
                        [("video0", "a", 0), ("video1", "b", 1)]))
    _write(tmp_path / "test_videodatainfo.json",
           _msrvtt_json([("video10000", "test")], [("video10000", "c", 0)]))
    clips = read_annotations("msrvtt", str(tmp_path), "", "test")
    assert clips == [ClipAnnotation("video10000", "video10000.mp4", ("c",))]
    assert _ids(read_annotations("msrvtt", str(tmp_path), "", "train")) == ["video0"]


def test_msrvtt_jsfusion_1k_a_csv(tmp_path):
    path = _write(tmp_path / "MSRVTT_JSFUSION_test.csv",
                  "key,vid_key,video_id,sentence\n"
                  "ret0,msr7579,video7579,a girl wearing red top is putting a sweater on a dog\n"
                  "ret1,msr7725,video7725,young people sit around the edges of a room\n")
    clips = read_annotations("msrvtt", path, "", "1k-A")
    assert clips == [
        ClipAnnotation("video7579", "video7579.mp4",
                       ("a girl wearing red top is putting a sweater on a dog",)),
        ClipAnnotation("video7725", "video7725.mp4",
                       ("young people sit around the edges of a room",)),
    ]
    with pytest.raises(ValueError, match="valid splits: 1k-A"):
        read_annotations("msrvtt", path, "", "test")


def test_msrvtt_1k_a_needs_the_csv(tmp_path):
    with pytest.raises(ValueError, match="MSRVTT_JSFUSION_test.csv"):
        read_annotations("msrvtt", _msrvtt_fixture(tmp_path), "", "1k-A")


# MSR-VTT in miniature: 12 videos over the official splits, 3 captions each (sen_ids
# interleaved across videos, as in the release), and a 1k-A list of 3 test videos.
_MSRVTT_SPLITS = ["train"] * 6 + ["validate"] * 2 + ["test"] * 4
_MSRVTT_1K_A = ["video8", "video9", "video11"]
_MSRVTT_9K = ["video0", "video1", "video2", "video3", "video4", "video5", "video6",
              "video7", "video10"]


def _msrvtt_captions(video_id):
    return tuple(f"{video_id} caption {n}" for n in range(3))


def _msrvtt_folder(tmp_path, *, jsfusion=True, train_9k=None, year=2016):
    """An annotation folder: the JSON, the 1k-A list and, if given, a 9k list."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    videos = [(f"video{i}", split) for i, split in enumerate(_MSRVTT_SPLITS)]
    sentences = [(video_id, f"{video_id} caption {n}", 12 * n + i)
                 for n in reversed(range(3)) for i, (video_id, _) in enumerate(videos)]
    if year == 2016:
        _write(tmp_path / "videodatainfo.json", _msrvtt_json(videos, sentences))
    else:  # 2017: train and validate videos in one file, test videos in the other.
        for name, kept in (("train_val", ("train", "validate")), ("test", ("test",))):
            _write(tmp_path / f"{name}_videodatainfo.json", _msrvtt_json(
                [v for v in videos if v[1] in kept],
                [s for s in sentences if _MSRVTT_SPLITS[int(s[0][5:])] in kept]))
    if jsfusion:
        _write(tmp_path / "MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id,sentence\n" + "".join(
            f"ret{n},msr{v[5:]},{v},{v} caption 0\n" for n, v in enumerate(_MSRVTT_1K_A)))
    if train_9k is not None:
        _write(tmp_path / "MSRVTT_train.9k.csv", "video_id\n" + "".join(
            f"{video_id}\n" for video_id in train_9k))
    return str(tmp_path)


def test_msrvtt_9k_is_every_video_outside_the_1k_a_list_with_all_its_captions(tmp_path):
    folder = _msrvtt_folder(tmp_path)
    clips = read_annotations("msrvtt", folder, "", "9k")
    assert clips == [ClipAnnotation(v, f"{v}.mp4", _msrvtt_captions(v)) for v in _MSRVTT_9K]
    # Videos of all three official splits, none of the 1k-A list: together, every video.
    test = _ids(read_annotations("msrvtt", folder, "", "1k-A"))
    assert test == _MSRVTT_1K_A
    assert sorted(_ids(clips) + test) == sorted(f"video{i}" for i in range(12))
    assert {"video0", "video6", "video10"} <= set(_ids(clips))


def test_msrvtt_9k_list_wins_and_keeps_its_order(tmp_path, monkeypatch):
    from vlsa_jax.data.datasets import msrvtt
    warnings = []
    monkeypatch.setattr(msrvtt.logging, "warning", lambda *args: warnings.append(args))
    # The release's list agrees with the 1k-A list's complement: no warning.
    same = _msrvtt_folder(tmp_path / "same", train_9k=_MSRVTT_9K)
    assert _ids(read_annotations("msrvtt", same, "", "9k")) == _MSRVTT_9K
    assert not warnings
    # A list that disagrees is still the split (in its order), with a warning.
    listed = ["video10", "video0", "video7"]
    other = _msrvtt_folder(tmp_path / "other", train_9k=listed)
    assert read_annotations("msrvtt", other, "", "9k") == [
        ClipAnnotation(v, f"{v}.mp4", _msrvtt_captions(v)) for v in listed]
    assert len(warnings) == 1 and warnings[0][3:5] == (3, 9)
    # Without the 1k-A list, and with 2017's two files, the 9k list alone will do.
    alone = _msrvtt_folder(tmp_path / "alone", jsfusion=False, train_9k=listed, year=2017)
    assert _ids(read_annotations("msrvtt", alone, "", "9k")) == listed


def test_msrvtt_9k_list_must_name_videos_of_the_json_and_none_of_1k_a(tmp_path):
    unknown = _msrvtt_folder(tmp_path / "unknown", train_9k=["video0", "video99", "video12"])
    with pytest.raises(ValueError, match="MSRVTT_train.9k.csv names videos not in "
                       "videodatainfo.json: 'video99', 'video12'$"):
        read_annotations("msrvtt", unknown, "", "9k")
    leak = _msrvtt_folder(tmp_path / "leak", train_9k=["video0", "video11", "video8"])
    with pytest.raises(ValueError, match="videos of the 1k-A test list .*: 'video11', 'video8'$"):
        read_annotations("msrvtt", leak, "", "9k")
    repeated = _msrvtt_folder(tmp_path / "repeated", train_9k=["video0", "video1", "video0"])
    with pytest.raises(ValueError, match="msrvtt: duplicate clip id 'video0'"):
        read_annotations("msrvtt", repeated, "", "9k")


def test_msrvtt_9k_needs_a_list_a_folder_and_the_2016_json(tmp_path):
    bare = _msrvtt_folder(tmp_path / "bare", jsfusion=False)
    with pytest.raises(ValueError, match="'9k' needs MSRVTT_train.9k.csv .* or "
                       "MSRVTT_JSFUSION_test.csv .*; found neither"):
        read_annotations("msrvtt", bare, "", "9k")
    folder = _msrvtt_folder(tmp_path / "full")
    for path in ("videodatainfo.json", "MSRVTT_JSFUSION_test.csv"):
        with pytest.raises(ValueError, match="'9k' is read from the annotation folder"):
            read_annotations("msrvtt", f"{folder}/{path}", "", "9k")
    # Derived from the 1k-A list, the split needs the 2016 JSON, holding every 1k-A video.
    newer = _msrvtt_folder(tmp_path / "2017", year=2017)
    with pytest.raises(ValueError, match="derived from MSR-VTT 2016's videodatainfo.json"):
        read_annotations("msrvtt", newer, "", "9k")
    partial = tmp_path / "partial"
    partial.mkdir()
    _write(partial / "videodatainfo.json", _msrvtt_json(
        [("video0", "train"), ("video8", "test")], [("video0", "a", 0), ("video8", "b", 1)]))
    (partial / "MSRVTT_JSFUSION_test.csv").write_text(
        (tmp_path / "full" / "MSRVTT_JSFUSION_test.csv").read_text())
    with pytest.raises(ValueError, match="MSRVTT_JSFUSION_test.csv names videos not in "
                       r"videodatainfo.json \(is it MSR-VTT 2016's\?\): 'video9', 'video11'"):
        read_annotations("msrvtt", str(partial), "", "9k")


def test_msrvtt_1k_a_from_a_folder_needs_the_list(tmp_path):
    folder = _msrvtt_folder(tmp_path / "with")
    assert read_annotations("msrvtt", folder, "", "1k-A") == [
        ClipAnnotation(v, f"{v}.mp4", (f"{v} caption 0",)) for v in _MSRVTT_1K_A]
    without = _msrvtt_folder(tmp_path / "without", jsfusion=False)
    with pytest.raises(ValueError, match="'1k-A' needs MSRVTT_JSFUSION_test.csv in"):
        read_annotations("msrvtt", without, "", "1k-A")


def test_msrvtt_fine_tuning_trains_on_9k_and_evaluates_on_1k_a():
    from tests.helpers import load_config
    config = load_config("finetune.py", "dataset=msrvtt")
    assert config.data.train_split == "data/msrvtt/9k"
    assert config.eval.splits == "data/msrvtt/1k-A"
    assert config.train.num_steps == 20 * -(-9_000 // 256)


# --- lsmdc ----------------------------------------------------------------------------


def test_lsmdc_movie_folder_and_one_caption_per_clip(tmp_path):
    rows = [
        [_LSMDC_CLIP, "00.00.51.926", "00.00.54.129", "00.00.51.000", "00.00.55.000",
         'SOMEONE glances at a "sign"\twith a tab.'],
        ["1004_Juno_01.02.03.004-01.02.05.006", "01.02.03.004", "01.02.05.006",
         "01.02.03.000", "01.02.06.000", "Someone smiles."],
    ]
    path = _write(tmp_path / "LSMDC16_annos_training.csv",
                  "\r\n".join("\t".join(row) for row in rows) + "\r\n")
    clips = read_annotations("lsmdc", path, "", "train")
    assert clips == [
        ClipAnnotation(_LSMDC_CLIP, f"0001_American_Beauty/{_LSMDC_CLIP}.avi",
                       ('SOMEONE glances at a "sign"\twith a tab.',)),
        ClipAnnotation("1004_Juno_01.02.03.004-01.02.05.006",
                       "1004_Juno/1004_Juno_01.02.03.004-01.02.05.006.avi",
                       ("Someone smiles.",)),
    ]


def test_lsmdc_rejects_short_lines_and_ids_without_span(tmp_path):
    short = _write(tmp_path / "short.csv", f"{_LSMDC_CLIP}\t1\t2\n")
    with pytest.raises(ValueError, match="short.csv:1: expected 6"):
        read_annotations("lsmdc", short, "", "train")
    no_span = _write(tmp_path / "no_span.csv", "0001_American_Beauty\t1\t2\t3\t4\tx\n")
    with pytest.raises(ValueError, match="'0001_American_Beauty' does not end"):
        read_annotations("lsmdc", no_span, "", "train")


# --- audiocaps ------------------------------------------------------------------------


def test_audiocaps_groups_five_captions_and_finds_media_by_stem(tmp_path):
    media = tmp_path / "media"
    _touch(media, "cut/abc_30.wav", "def.flac", "Yghi.mp4", "notes.txt")
    rows = [(f"{n}", "abc", "30", f"abc caption {n}") for n in range(1, 4)]
    rows += [("10", "def", "0", "def caption"), ("11", "ghi", "12", "ghi caption"),
             ("12", "jkl", "5", "missing")]
    rows += [(f"{n}", "abc", "30", f"abc caption {n}") for n in range(4, 6)]
    path = _write(tmp_path / "test.csv", "audiocap_id,youtube_id,start_time,caption\n"
                  + "".join(",".join(row) + "\n" for row in rows))
    clips = read_annotations("audiocaps", path, str(media), "test")
    assert clips == [
        ClipAnnotation("abc_30", "cut/abc_30.wav", tuple(f"abc caption {n}" for n in range(1, 6))),
        ClipAnnotation("def_0", "def.flac", ("def caption",)),
        ClipAnnotation("ghi_12", "Yghi.mp4", ("ghi caption",)),
        ClipAnnotation("jkl_5", "jkl.wav", ("missing",)),
    ]
    assert get_adapter("audiocaps").modalities == "at"


# --- sounddescs -----------------------------------------------------------------------


def test_sounddescs_filters_by_split_list(tmp_path):
    path = _write(tmp_path / "descriptions.csv",
                  "id,description,category\n"
                  "07070011,Rain on a tin roof.,nature\n"
                  "07070012,Door slams.,household\n"
                  "07070013,Dog barks twice.,animals\n")
    assert read_annotations("sounddescs", path, "", "test") == [
        ClipAnnotation("07070011", "07070011.wav", ("Rain on a tin roof.",)),
        ClipAnnotation("07070012", "07070012.wav", ("Door slams.",)),
        ClipAnnotation("07070013", "07070013.wav", ("Dog barks twice.",)),
    ]
    _write(tmp_path / "train_list.txt", "07070013\n07070011\n")
    _write(tmp_path / "val_list.txt", "07070012\n")
    assert _ids(read_annotations("sounddescs", path, "", "train")) == ["07070011", "07070013"]
    assert _ids(read_annotations("sounddescs", path, "", "val")) == ["07070012"]


# --- youcook2 -------------------------------------------------------------------------


def test_youcook2_one_clip_per_segment(tmp_path):
    media = tmp_path / "raw_videos"
    _touch(media, "training/101/GLd3aX16zBg.webm", "validation/113/xHr8X2Wpmno.mp4")
    database = {
        "GLd3aX16zBg": {"subset": "training", "duration": 241.62, "recipe_type": "101",
                        "annotations": [
                            {"segment": [90, 102], "id": 0, "sentence": "spread margarine"},
                            {"segment": [114, 127], "id": 1, "sentence": "place a slice"},
                        ]},
        "xHr8X2Wpmno": {"subset": "validation", "duration": 100.0, "recipe_type": "113",
                        "annotations": [{"segment": [1.5, 9], "id": 0, "sentence": "cut"}]},
        "missing0001": {"subset": "training", "duration": 50.0, "recipe_type": "101",
                        "annotations": [{"segment": [3, 8], "id": 0, "sentence": "boil"}]},
    }
    path = _write(tmp_path / "youcookii_annotations_trainval.json",
                  json.dumps({"database": database}))
    assert read_annotations("youcook2", path, str(media), "train") == [
        ClipAnnotation("GLd3aX16zBg_0", "training/101/GLd3aX16zBg.webm",
                       ("spread margarine",), 90.0, 102.0),
        ClipAnnotation("GLd3aX16zBg_1", "training/101/GLd3aX16zBg.webm",
                       ("place a slice",), 114.0, 127.0),
        ClipAnnotation("missing0001_0", "missing0001.mp4", ("boil",), 3.0, 8.0),
    ]
    assert read_annotations("youcook2", path, str(media), "val") == [
        ClipAnnotation("xHr8X2Wpmno_0", "validation/113/xHr8X2Wpmno.mp4", ("cut",), 1.5, 9.0),
    ]


def test_youcook2_test_segments_have_no_captions(tmp_path):
    database = {"vid": {"subset": "testing", "duration": 20.0,
                        "annotations": [{"segment": [0, 5], "id": 0}]}}
    path = _write(tmp_path / "test.json", json.dumps({"database": database}))
    assert read_annotations("youcook2", path, "", "test") == [
        ClipAnnotation("vid_0", "vid.mp4", (), 0.0, 5.0)]


# --- howto100m ------------------------------------------------------------------------


def test_howto100m_one_clip_per_triple(tmp_path):
    media = tmp_path / "videos"
    _touch(media, "part1/nVbIUDjzWY4.webm")
    captions = {
        "nVbIUDjzWY4": {"start": [0.0, 4.5], "end": [4.5, 9.25], "text": ["hi", "next"]},
        "other": {"start": [3], "end": [6], "text": ["only"]},
    }
    path = _write(tmp_path / "caption.json", json.dumps(captions))
    assert read_annotations("howto100m", path, str(media), "train") == [
        ClipAnnotation("nVbIUDjzWY4_0", "part1/nVbIUDjzWY4.webm", ("hi",), 0.0, 4.5),
        ClipAnnotation("nVbIUDjzWY4_1", "part1/nVbIUDjzWY4.webm", ("next",), 4.5, 9.25),
        ClipAnnotation("other_0", "other.mp4", ("only",), 3.0, 6.0),
    ]


def test_howto100m_rejects_lists_of_different_lengths(tmp_path):
    path = _write(tmp_path / "caption.json",
                  json.dumps({"v": {"start": [0, 1], "end": [1], "text": ["a", "b"]}}))
    with pytest.raises(ValueError, match="'v' has 2 starts, 1 ends and 2 texts"):
        read_annotations("howto100m", path, "", "train")


# --- Rules every adapter follows ------------------------------------------------------


def _non_utf8_fixture(name: str, tmp_path: pathlib.Path) -> str:
    """A file of `name`'s format whose first caption holds a Latin-1 'é' (byte 0xe9)."""
    caption = b"caf\xe9 scene"
    if name == "generic":
        data = b"id,path,caption\nc,c.mp4," + caption + "\nd,d.mp4,caf\u00e9 ok\n".encode()
        file_name = "clips.csv"
    elif name == "lsmdc":
        data = _LSMDC_CLIP.encode() + b"\t1\t2\t3\t4\t" + caption + b"\n"
        file_name = "annos.csv"
    else:
        data = _msrvtt_json([("video0", "train")], [("video0", "@", 0)]).encode()
        data = data.replace(b"@", caption)
        file_name = "videodatainfo.json"
    path = tmp_path / file_name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name", ["generic", "lsmdc", "msrvtt"])
def test_non_utf8_bytes_are_kept_as_escapes_in_their_caption(name, tmp_path):
    clips = read_annotations(name, _non_utf8_fixture(name, tmp_path), "", "train")
    assert clips[0].captions == ("caf\udce9 scene",)
    assert all(common.utf8_error(c) is None for clip in clips[1:] for c in clip.captions)


def test_utf8_errors_are_described_and_replaced():
    assert common.utf8_error("caf\u00e9") is None
    assert common.utf8_error("caf\udce9 \udcff") == "byte 0xe9 at character 3 is not UTF-8"
    assert common.utf8_error("a\ud83d") == "unpaired surrogate U+D83D at character 1 is not UTF-8"
    assert common.replace_invalid_utf8("caf\udce9 \udcff") == "caf\ufffd \ufffd"


@pytest.mark.parametrize("name, file_name, text", [
    ("generic", "clips.jsonl",
     '{"id": "x", "path": "1.mp4", "caption": ""}\n{"id": "x", "path": "2.mp4", "caption": ""}'),
    ("msrvtt", "MSRVTT_JSFUSION_test.csv",
     "key,vid_key,video_id,sentence\nret0,msr1,video1,a\nret1,msr1,video1,b\n"),
    ("lsmdc", "annos.csv", f"{_LSMDC_CLIP}\t1\t2\t3\t4\ta\n{_LSMDC_CLIP}\t1\t2\t3\t4\tb\n"),
    ("sounddescs", "descriptions.csv", "id,description\n0001,a\n0001,b\n"),
])
def test_duplicate_clip_ids_are_rejected(name, file_name, text, tmp_path):
    path = _write(tmp_path / file_name, text)
    split = "1k-A" if name == "msrvtt" else "train"
    with pytest.raises(ValueError, match=f"{name}: duplicate clip id"):
        read_annotations(name, path, "", split)


@pytest.mark.parametrize("name, valid", [
    ("msrvtt", "train, val, test, 1k-A, 9k"),
    ("lsmdc", "train, val, test"),
    ("audiocaps", "train, val, test"),
    ("sounddescs", "train, val, test"),
    ("youcook2", "train, val, test"),
])
def test_unknown_split_names_valid_ones(name, valid, tmp_path):
    # The split is checked before the file is read, so any file will do.
    path = _write(tmp_path / "annotations.json", "{}")
    with pytest.raises(ValueError, match=f"{name}: unknown split 'validation'; valid splits: "
                       + valid):
        read_annotations(name, path, "", "validation")
