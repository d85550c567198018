"""The main job of `make demo` runs and writes what it says (short run)."""

import pytest

from filters import open_run
from filters.demo import default_filters, main


def test_demo_prints_table_and_writes_netcdf(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--cycles", "450", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Lorenz-96 sakov2008" in out and "450 cycles" in out
    rows = [ln for ln in out.splitlines() if "±" in ln]
    assert len(rows) == len(default_filters())
    for ln in rows:
        rmse = float(ln.split("±")[0].split()[-1])
        assert 0.1 < rmse < 0.6, ln  # every filter tracks the truth (obs error std is 1)
    files = sorted(p.name for p in tmp_path.glob("*.nc"))
    assert len(files) == len(default_filters())
    ds = open_run(tmp_path / "etkf.nc")
    assert ds.sizes["time"] == 450 and ds.attrs["seed"] == 1


def test_demo_rejects_too_few_cycles(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--cycles", "100"])
