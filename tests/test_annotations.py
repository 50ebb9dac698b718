"""Annotation readers: one tiny hand-written file per dataset format, and malformed lines."""

import json

import pytest

from sct.data.annotations import detect_format, read_annotations, read_class_list, read_classes_file, ssv2_class
from sct.errors import AnnotationError, ConfigError


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_path_label(tmp_path):
    ann = _write(tmp_path / "train.csv", "path,label\nvideos/b/1.mp4,bravo\nvideos/a/2.mp4,alpha\n")
    out = read_annotations("auto", ann, tmp_path)
    assert out.class_names == ["alpha", "bravo"]  # sorted names fix the ids
    assert out.paths == [str(tmp_path / "videos/b/1.mp4"), str(tmp_path / "videos/a/2.mp4")]
    assert out.labels == [1, 0]
    fixed = read_annotations("csv", ann, tmp_path, classes=["bravo", "alpha"])
    assert fixed.labels == [0, 1]


def test_csv_bad_header_and_unknown_label(tmp_path):
    ann = _write(tmp_path / "a.csv", "file,class\nx.mp4,a\n")
    with pytest.raises(AnnotationError, match=r"a\.csv:1: header"):
        read_annotations("csv", ann, tmp_path)
    ann = _write(tmp_path / "b.csv", "path,label\nx.mp4,a\ny.mp4,zebra\n")
    with pytest.raises(AnnotationError, match=r"b\.csv:3: label 'zebra'"):
        read_annotations("csv", ann, tmp_path, classes=["a"])


def test_path_label_list(tmp_path):
    ann = _write(tmp_path / "list.txt", "a/my clip.mp4 2\nb/x.mp4 0\n\n")
    out = read_annotations("auto", ann, tmp_path)
    assert out.paths[0] == str(tmp_path / "a/my clip.mp4") and out.labels == [2, 0]
    assert out.class_names == ["0", "1", "2"]
    bad = _write(tmp_path / "bad.txt", "a.mp4 1\nonlyonefield\n")
    with pytest.raises(AnnotationError, match=r"bad\.txt:2: expected 'path label'"):
        read_annotations("list", bad, tmp_path)
    neg = _write(tmp_path / "neg.txt", "a.mp4 -1\n")
    with pytest.raises(AnnotationError, match=r"neg\.txt:1: label id -1"):
        read_annotations("list", neg, tmp_path)


def test_kinetics_official_csv(tmp_path):
    ann = _write(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\n"
                                         "abseiling,---QUuC4vJs,3,13,train\n"
                                         "air drumming,--nQbRBEz2s,104,114,train\n")
    assert detect_format(ann) == "kinetics"
    out = read_annotations("auto", ann, tmp_path / "videos")
    assert out.paths == [str(tmp_path / "videos/abseiling/---QUuC4vJs_000003_000013.mp4"),
                         str(tmp_path / "videos/air drumming/--nQbRBEz2s_000104_000114.mp4")]
    assert out.class_names == ["abseiling", "air drumming"] and out.labels == [0, 1]
    _write(tmp_path / "flat/---QUuC4vJs_000003_000013.mp4", "x")  # CVDF layout: no label folders
    _write(tmp_path / "flat/air_drumming/--nQbRBEz2s_000104_000114.mp4", "x")  # underscores for spaces
    found = read_annotations("kinetics", ann, tmp_path / "flat")
    assert found.paths == [str(tmp_path / "flat/---QUuC4vJs_000003_000013.mp4"),
                           str(tmp_path / "flat/air_drumming/--nQbRBEz2s_000104_000114.mp4")]
    bad = _write(tmp_path / "bad.csv", "label,youtube_id,time_start,time_end,split\nabseiling,x,three,13,train\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:2: bad time_start"):
        read_annotations("kinetics", bad, tmp_path)


def test_ucf101_split_files(tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    _write(splits / "classInd.txt", "1 ApplyEyeMakeup\n2 Archery\n3 Biking\n")
    _write(splits / "trainlist02.txt", "Biking/v_Biking_g08_c01.avi 3\nArchery/v_Archery_g09_c02.avi 2\n")
    _write(splits / "testlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    assert detect_format(splits) == "ucf101"
    train = read_annotations("ucf101", splits, tmp_path / "UCF-101", split_name="train", split=2)
    assert train.class_names == ["ApplyEyeMakeup", "Archery", "Biking"]  # classInd order, not sorted names
    assert train.labels == [2, 1]
    assert train.paths[0] == str(tmp_path / "UCF-101/Biking/v_Biking_g08_c01.avi")
    test = read_annotations("ucf101", splits, tmp_path / "UCF-101", split_name="test", split=2)
    assert test.labels == [0]
    _write(splits / "trainlist03.txt", "Biking/v_Biking_g08_c01.avi three\n")
    with pytest.raises(AnnotationError, match=r"trainlist03\.txt:1"):
        read_annotations("ucf101", splits, tmp_path, split_name="train", split=3)


def test_hmdb51_split_files(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    _write(splits / "wave_test_split1.txt", "w1.avi 1\nw2.avi 2\nw3.avi 0\n")
    _write(splits / "brush_hair_test_split1.txt", "b1.avi 2 \nb2.avi 1\n")
    assert detect_format(splits) == "hmdb51"
    train = read_annotations("auto", splits, tmp_path / "hmdb", split_name="train", split=1)
    assert train.class_names == ["brush_hair", "wave"]
    assert sorted(zip(train.paths, train.labels)) == [(str(tmp_path / "hmdb/brush_hair/b2.avi"), 0),
                                                      (str(tmp_path / "hmdb/wave/w1.avi"), 1)]
    test = read_annotations("hmdb51", splits, tmp_path / "hmdb", split_name="test", split=1)
    assert len(test.paths) == 2  # the "0" (unused) line is in neither split
    _write(splits / "wave_test_split2.txt", "w1.avi 3\n")
    with pytest.raises(AnnotationError, match=r"wave_test_split2\.txt:1"):
        read_annotations("hmdb51", splits, tmp_path, split=2)


def test_ssv2_json(tmp_path):
    labels = _write(tmp_path / "labels.json", json.dumps({"Holding something next to something": "1",
                                                          "Approaching something with your camera": "0"}))
    ann = _write(tmp_path / "train.json", json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "bottle"]},
        {"id": "42326", "label": "approaching a cup with your camera",
         "template": "Approaching [something] with your camera", "placeholders": ["a cup"]}]))
    assert ssv2_class("Putting [something] on [something]") == "Putting something on something"
    classes = read_classes_file(labels)
    assert classes == ["Approaching something with your camera", "Holding something next to something"]
    out = read_annotations("auto", ann, tmp_path / "videos", classes=classes)
    assert out.labels == [1, 0] and out.paths[0] == str(tmp_path / "videos/78687.webm")
    bad = _write(tmp_path / "bad.json", json.dumps([{"id": "1", "template": "x"}, {"id": "2"}]))
    with pytest.raises(AnnotationError, match=r"bad\.json:2"):
        read_annotations("ssv2", bad, tmp_path, classes=["x"])


def test_diving48_json(tmp_path):
    ann = _write(tmp_path / "Diving48_train.json", json.dumps([
        {"vid_name": "-mmq0PT-u8k_00155", "label": 12, "start_frame": 0, "end_frame": 83},
        {"vid_name": "-mmq0PT-u8k_00156", "label": 0, "start_frame": 0, "end_frame": 60}]))
    out = read_annotations("auto", ann, tmp_path / "rgb")
    assert out.labels == [12, 0] and len(out.class_names) == 48
    assert out.paths[0] == str(tmp_path / "rgb/-mmq0PT-u8k_00155.mp4")
    bad = _write(tmp_path / "bad.json", json.dumps([{"vid_name": "a", "label": "x"}]))
    with pytest.raises(AnnotationError, match=r"bad\.json:1"):
        read_annotations("diving48", bad, tmp_path)


def test_moments_in_time_csv(tmp_path):
    cats = _write(tmp_path / "moments_categories.txt", "clapping,1\nabseiling,0\n")
    ann = _write(tmp_path / "trainingSet.csv", "abseiling/a.mp4,abseiling,3,0\nclapping/b.mp4,clapping,2,1\n")
    assert detect_format(ann) == "mit"
    classes = read_class_list(cats)
    assert classes == ["abseiling", "clapping"]
    out = read_annotations("mit", ann, tmp_path / "training", classes=classes)
    assert out.labels == [0, 1] and out.paths[1] == str(tmp_path / "training/clapping/b.mp4")
    bad = _write(tmp_path / "bad.csv", "abseiling/a.mp4,abseiling\nonly-a-path.mp4\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:2"):
        read_annotations("mit", bad, tmp_path)


def test_folder_layout(tmp_path):
    for rel in ("walk/a.mp4", "walk/b.avi", "run/c.mp4", "run/readme.txt"):
        _write(tmp_path / "data" / rel, "x")
    (tmp_path / "data/run/frames_clip").mkdir()  # a frame folder counts as a video
    (tmp_path / "data/.ipynb_checkpoints").mkdir()  # hidden folders are neither classes nor videos
    (tmp_path / "data/run/.cache").mkdir()
    out = read_annotations("auto", tmp_path / "data", tmp_path)
    assert out.class_names == ["run", "walk"]
    assert [p.split("/data/")[1] for p in out.paths] == ["run/c.mp4", "run/frames_clip", "walk/a.mp4", "walk/b.avi"]
    assert out.labels == [0, 0, 1, 1]


def test_class_list_formats_and_errors(tmp_path):
    assert read_class_list(_write(tmp_path / "a.txt", "cat\ndog\n")) == ["cat", "dog"]
    assert read_class_list(_write(tmp_path / "b.txt", "2 dog\n1 cat\n")) == ["cat", "dog"]
    with pytest.raises(AnnotationError, match="consecutive"):
        read_class_list(_write(tmp_path / "c.txt", "1 cat\n3 dog\n"))


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="data.format"):
        read_annotations("youtube8m", tmp_path / "x.csv", tmp_path)
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations("csv", tmp_path / "missing.csv", tmp_path)
