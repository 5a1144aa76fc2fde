"""The README's lesson gallery is generated from docs/lessons/*.json by scripts/gallery.py: the README in the tree is
what the script writes (a numerics change cannot leave stale claims), every figure it shows exists, and a changed
number makes the check fail until the gallery is regenerated."""
import importlib.util
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gallery", ROOT / "scripts" / "gallery.py")
gallery = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gallery)


def test_readme_gallery_is_fresh_and_its_figures_exist(capsys):
    assert gallery.main(["--check"]) == 0, capsys.readouterr().err
    readme = (ROOT / "README.md").read_text()
    section = readme.split(gallery.BEGIN)[1].split(gallery.END)[0]
    figures = re.findall(r"!\[[^\]]*\]\((docs/lessons/[^)]+\.png)\)", section)
    records = gallery.records(ROOT / "docs" / "lessons")
    assert len(figures) == len(records) >= 12
    assert all((ROOT / f).is_file() for f in figures)
    for r in records:  # each lesson's verdict and its time are in the table
        assert f"`trainlab lesson {r['lesson']}` | {r['seconds']:.0f} s | **{r['verdict']}**" in section


def test_a_changed_number_is_stale_until_regenerated(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    shutil.copytree(ROOT / "docs" / "lessons", tmp_path / "docs" / "lessons")
    shutil.copyfile(ROOT / "README.md", tmp_path / "README.md")
    path = tmp_path / "docs" / "lessons" / "clipping.json"
    record = json.loads(path.read_text())
    record["claims"][0]["effect"] = 0.123456
    path.write_text(json.dumps(record))
    assert gallery.main(["--check", "--root", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err
    assert gallery.main(["--root", str(tmp_path)]) == 0
    assert gallery.main(["--check", "--root", str(tmp_path)]) == 0
    assert "+0.123 ± " in (tmp_path / "README.md").read_text()
    before = (tmp_path / "README.md").read_text().split(gallery.BEGIN)[0]
    assert before == (ROOT / "README.md").read_text().split(gallery.BEGIN)[0]  # the rest of the README untouched
