"""The image definitions agree with each other and with the project, checked without building:
Apptainer is not available on these machines, so this is how far its definition is exercised
(the image `make container-test` builds runs the same install script)."""

import re
import subprocess
import tomllib

import pytest

from conftest import ROOT

CONTAINERS = ROOT / "containers"


def def_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {"header": []}
    name = "header"
    for line in (CONTAINERS / "worldmodels.def").read_text().splitlines():
        if line.startswith("%"):
            name = line[1:].strip()
            sections[name] = []
        elif line.strip() and not line.lstrip().startswith("#"):
            sections[name].append(line.strip())
    return sections


def test_both_definitions_install_with_the_same_script():
    dockerfile = (CONTAINERS / "Dockerfile").read_text()
    assert "RUN /opt/worldmodels/containers/install.sh /opt/worldmodels" in dockerfile
    assert def_sections()["post"] == ["/opt/worldmodels/containers/install.sh /opt/worldmodels"]


def test_the_apptainer_image_gets_everything_the_install_needs():
    copied = {line.split()[0] for line in def_sections()["files"]}
    include = re.search(r"^include = \[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M)[1]
    packages = {name.strip(' "*') for name in include.split(",")}  # every package pip installs
    assert packages == {"worldmodels", "jobs", "cli"}
    assert {"pyproject.toml", "README.md", "containers", "configs"} | packages <= copied
    assert all((ROOT / path).exists() for path in copied)


def test_both_definitions_default_to_the_same_base():
    docker_base = re.search(r"^ARG BASE=(\S+)", (CONTAINERS / "Dockerfile").read_text(), re.M)[1]
    def_base = next(line.split("=", 1)[1] for line in def_sections()["arguments"] if line.startswith("BASE="))
    assert docker_base.removeprefix("docker.io/") == def_base


def test_the_lock_file_pins_every_dependency_the_project_pins():
    locked = dict(line.split("==") for line in (CONTAINERS / "requirements.lock").read_text().splitlines()
                  if line and not line.startswith("#"))
    locked = {name.lower().replace("_", "-"): version for name, version in locked.items()}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name, _, spec = re.match(r"([A-Za-z0-9_.-]+)(\[.*\])?(.*)", dep).groups()
        name = name.lower().replace("_", "-")
        assert name in locked, f"{name} is not in containers/requirements.lock (make container-lock)"
        if spec.startswith("==") and "*" not in spec:
            assert locked[name] == spec[2:], f"{name}: pyproject pins {spec}, the lock has {locked[name]}"


@pytest.mark.parametrize("script", ["install.sh", "run.sh", "build.sh", "base-image.sh"])
def test_the_container_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(CONTAINERS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_run_sh_refuses_a_missing_apptainer_image_in_one_line(tmp_path):
    proc = subprocess.run([str(CONTAINERS / "run.sh"), str(tmp_path / "none.sif"), "python"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no Apptainer image" in proc.stderr
