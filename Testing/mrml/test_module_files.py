"""Static checks of the Slicer extension files (no Slicer needed): what a Slicer build would reject or
silently drop, and what the panels would trip over at run time."""

from __future__ import annotations

import ast
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from module_paths import MODULES, REPO

LIB_FORBIDDEN_IMPORTS = ("qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper",
                         "slicer.app", "SampleData")


def _cmake_list(text: str, variable: str, module: str) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [item.replace("${MODULE_NAME}", module) for item in match.group(1).split()]


def _py_files(module: str) -> list[str]:
    folder = REPO / module
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.py")
                  if "__pycache__" not in p.parts and p.parts[len(folder.parts)] != "Testing")


def _ui_names(module: str) -> set[str]:
    root = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()
    return {w.get("name") for w in root.iter("widget")}


def _ui_parameters(module: str) -> dict[str, str]:
    root = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()
    found = {}
    for w in root.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                found[prop.find("string").text] = w.get("class")
    return found


def _ast(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _ui_references(tree: ast.AST) -> set[str]:
    """Names used as ``self.ui.<name>``."""
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def _parameter_fields(module: str) -> dict[str, str]:
    """Fields of the module's ``@parameterNodeWrapper`` class → annotation source."""
    tree = _ast(REPO / module / f"{module}.py")
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


def _shared_ui_references() -> set[str]:
    tree = _ast(REPO / "DSAReconstruction" / "DSAReconstruction.py")
    base = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EngineModuleWidget")
    return _ui_references(base)


@pytest.mark.parametrize("module", MODULES)
def test_every_python_file_compiles(module, tmp_path):
    for rel in _py_files(module):
        py_compile.compile(str(REPO / module / rel), cfile=str(tmp_path / "x.pyc"), doraise=True)


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_every_python_file_and_resource(module):
    folder = REPO / module
    text = (folder / "CMakeLists.txt").read_text()
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS", module)
    assert sorted(s if s.endswith(".py") else s + ".py" for s in scripts) == _py_files(module)
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
    on_disk = sorted(str(p.relative_to(folder)) for p in (folder / "Resources").rglob("*") if p.is_file())
    assert sorted(resources) == on_disk
    required = {f"Resources/UI/{module}.ui", f"Resources/Icons/{module}.png", "Resources/requirements.txt"}
    assert required <= set(resources)
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert (folder / "Testing" / "CMakeLists.txt").read_text().strip() == "add_subdirectory(Python)"
    assert (folder / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_top_level_cmake_declares_extension():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"project\(SlicerAngioRecon\)", text)
    for var in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf"set\(EXTENSION_{var} \"[^\"]+\"\)", text), var
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert [m for m in re.findall(r"add_subdirectory\((\w+)\)", text)] == list(MODULES)
    assert text.index("## NEXT_MODULE") > text.index("add_subdirectory(CoronaryTwoView)")
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text
    # the engine package is installed with the extension: every engine file is matched by the globs
    assert "ctkMacroCompilePythonScript(" in text and "angiorecon/*.py" in text
    assert (REPO / "Resources" / "Icons" / "SlicerAngioRecon.png").is_file()


@pytest.mark.parametrize("module", MODULES)
def test_ui_is_valid_and_binds_every_parameter(module):
    root = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()
    assert root.tag == "ui" and root.find("class").text == module
    assert root.find("widget").get("class") == "qMRMLWidget"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    bound = _ui_parameters(module)
    fields = _parameter_fields(module)
    assert sorted(bound) == sorted(fields)
    for name, widget_class in bound.items():
        annotation = fields[name]
        if annotation.startswith("vtkMRML"):
            assert widget_class == "qMRMLNodeComboBox", name
        elif annotation == "Path":
            assert widget_class == "ctkPathLineEdit", name
        elif annotation == "bool":
            assert widget_class == "QCheckBox", name
        elif "Choice(" in annotation:
            assert widget_class == "QComboBox", name
        elif annotation.startswith("Annotated[int"):
            assert widget_class == "QSpinBox", name
        else:
            assert (annotation, widget_class) == ("str", "QLineEdit"), name


@pytest.mark.parametrize("module", MODULES)
def test_every_referenced_widget_exists(module):
    used = _ui_references(_ast(REPO / module / f"{module}.py")) | _shared_ui_references()
    missing = used - _ui_names(module)
    assert not missing, f"{module}.py uses widgets missing from {module}.ui: {sorted(missing)}"


@pytest.mark.parametrize("module", MODULES)
def test_module_class_metadata(module):
    tree = _ast(REPO / module / f"{module}.py")
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {module, f"{module}Widget", f"{module}Logic", f"{module}Test", f"{module}ParameterNode"} <= classes
    source = (REPO / module / f"{module}.py").read_text()
    expected = "[]" if module == "DSAReconstruction" else '["DSAReconstruction"]'
    assert f"self.parent.dependencies = {expected}" in source
    assert "translate(\"qSlicerAbstractCoreModule\", CATEGORY)" in source


@pytest.mark.parametrize("module", MODULES)
def test_lib_never_imports_gui_at_import_time(module):
    for path in (REPO / module).glob(f"{module}Lib/*.py"):
        for node in _ast(path).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            bad = [n for n in names if n.split(".")[0] in ("qt", "ctk") or n in LIB_FORBIDDEN_IMPORTS]
            assert not bad, f"{path.name} imports {bad} at module level"


def test_requirements_match_engine_dependencies():
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M)
    deps = re.findall(r'"([^"]+)"', block.group(1))
    expected = sorted(d for d in deps if re.split(r"[<>=!~\[ ]", d)[0].lower() not in ("torch", "vtk"))
    for module in MODULES:
        lines = (REPO / module / "Resources" / "requirements.txt").read_text().splitlines()
        assert sorted(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")) == expected, module
