"""lib/NAME is at the same time a PlatformIO library (library.json, read by PlatformIO's own manifest
parser and schema), an Arduino library (library.properties, the same parser) and an ESP-IDF
component (CMakeLists.txt + idf_component.yml): the ESP-IDF example project is configured and built
against tests/library/idf_standin, a stand-in of ESP-IDF's project.cmake that checks every
idf_component_register call (sources, include dirs, requirements). No real ESP-IDF build runs here."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from lib_build import HERE
from test_library_examples import LINE, expected_line

from platformio.package.manifest.parser import ManifestParserFactory
from platformio.package.manifest.schema import ManifestSchema


def pio_manifest(path):
    parsed = ManifestParserFactory.new_from_file(str(path)).as_dict()
    return parsed, ManifestSchema().load_manifest(parsed)  # raises ManifestValidationError if invalid


@pytest.mark.parametrize("fixture", ["tiny", "kws"])
def test_library_json_and_properties_pass_platformios_parser(fixture, request):
    compiled = request.getfixturevalue(fixture)
    name = compiled.report["library"]["name"]
    lib = compiled.path / "lib" / name
    raw, valid = pio_manifest(lib / "library.json")
    assert valid["name"] == name and valid["version"] == "0.1.0" and valid["headers"] == [f"{name}_model.h"]
    assert raw["build"] == {"srcDir": ".", "includeDir": ".", "srcFilter": ["-<*>", f"+<{name}_model.c>"],
                            "flags": ["-O2"]}
    for example in valid["examples"]:
        for f in example["files"]:
            assert (lib / example["base"] / f).is_file()
    _, props = pio_manifest(lib / "library.properties")
    assert props["name"] == name and props["frameworks"] == ["arduino"] and props["headers"] == [f"{name}_model.h"]
    text = (lib / "library.properties").read_text()
    assert "architectures=*\n" in text and f"includes={name}_model.h\n" in text
    # Arduino's flat (1.0-compatible) layout: the sources sit in the library root, the sketch in examples/
    assert {p.name for p in lib.glob("*.c")} == {f"{name}_model.c"}


def idf_component_manifest(path) -> dict:
    import yaml          # PyYAML, what the ESP-IDF component manager itself reads manifests with
    return yaml.safe_load(path.read_text())


def test_idf_component_manifest(tiny):
    doc = idf_component_manifest(tiny.path / "lib" / "tiny" / "idf_component.yml")
    assert re.fullmatch(r"\d+\.\d+\.\d+", doc["version"]) and "tiny" in doc["description"]
    # its conv / linear layers can call ESP-NN on the S3: fetched there only
    assert doc["dependencies"] == {"idf": ">=4.4", "espressif/esp-nn": {
        "version": "^1.2.3", "rules": [{"if": "target in [esp32s3]"}]}}


def test_idf_example_project_against_the_idf_standin(kws, tmp_path):
    """examples/esp-idf configured with IDF_PATH=tests/library/idf_standin: lib/kws registers as
    component kws (SRCS kws_model.c, INCLUDE_DIRS ., no requirement), main requires kws and
    esp_timer; the app built with host gcc prints the emulator's class."""
    build = tmp_path / "build"
    env = dict(os.environ, IDF_PATH=str(HERE / "idf_standin"))
    cfg = subprocess.run(["cmake", "-S", str(kws.path / "examples" / "esp-idf"), "-B", str(build),
                          f"-DSTANDIN_APP_SOURCES={HERE / 'idf_app.c'};{HERE / 'host_board.c'}",
                          "-DCMAKE_C_FLAGS=-std=c99 -Wall -Wextra -Werror -pedantic"],
                         capture_output=True, text=True, env=env)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    components = {line.split("|")[0]: dict(kv.split("=", 1) for kv in line.split("|")[1:])
                  for line in (build / "components.txt").read_text().splitlines()}
    assert components == {
        "kws": {"srcs": "kws_model.c", "include_dirs": ".", "requires": "", "priv_requires": ""},
        "main": {"srcs": "main.c", "include_dirs": ".", "requires": "", "priv_requires": "kws,esp_timer"}}
    res = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    out = subprocess.run([str(build / "app")], capture_output=True, text=True, check=True, timeout=60).stdout
    m = LINE.search(out)
    best, label, score = expected_line(kws, None)
    assert m and (int(m.group(2)), m.group(3), m.group(4)) == (best, label, score)


def test_idf_standin_refuses_a_bad_component(tiny, tmp_path):
    """The stand-in is a check, not a rubber stamp: a missing source or an unknown requirement fails."""
    import shutil

    project = tmp_path / "proj"
    shutil.copytree(tiny.path / "examples" / "esp-idf", project)
    lib = tmp_path / "lib" / "tiny"
    shutil.copytree(tiny.path / "lib" / "tiny", lib)
    text = (project / "CMakeLists.txt").read_text().replace("${CMAKE_CURRENT_LIST_DIR}/../../lib/tiny", str(lib))
    (project / "CMakeLists.txt").write_text(text)
    env = dict(os.environ, IDF_PATH=str(HERE / "idf_standin"))
    for edit, message in ((lambda t: t.replace('"tiny_model.c"', '"missing.c"'), "source missing.c does not exist"),
                          (lambda t: t.replace('INCLUDE_DIRS "."', 'INCLUDE_DIRS "." REQUIRES esp_nn_nope'),
                           "requires esp_nn_nope")):
        original = (lib / "CMakeLists.txt").read_text()
        (lib / "CMakeLists.txt").write_text(edit(original))
        res = subprocess.run(["cmake", "-S", str(project), "-B", str(tmp_path / "b"), "-DSTANDIN_APP_SOURCES=x.c"],
                             capture_output=True, text=True, env=env)
        assert res.returncode != 0 and message in res.stderr, res.stderr
        (lib / "CMakeLists.txt").write_text(original)
        shutil.rmtree(tmp_path / "b", ignore_errors=True)
