"""The Hugging Face Space settings: space.yaml and README.md's front matter agree."""

import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def front_matter(text: str) -> dict:
    assert text.startswith("---\n"), "README.md must begin with YAML front matter for the Space"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_readme_front_matter_equals_space_yaml():
    with open(os.path.join(ROOT, "space.yaml")) as f:
        space = yaml.safe_load(f)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = front_matter(f.read())
    assert readme == space


def test_space_settings_are_complete_and_point_at_the_app():
    with open(os.path.join(ROOT, "space.yaml")) as f:
        space = yaml.safe_load(f)
    for key in ("title", "emoji", "sdk", "sdk_version", "app_file", "python_version", "suggested_hardware", "license"):
        assert space.get(key), key
    assert space["sdk"] == "gradio" and os.path.isfile(os.path.join(ROOT, space["app_file"]))
    assert isinstance(space["python_version"], str)  # "3.10" must not become 3.1


def test_sdk_version_is_one_requirements_allow():
    from packaging.version import Version

    with open(os.path.join(ROOT, "space.yaml")) as f:
        version = Version(yaml.safe_load(f)["sdk_version"])
    gradio = next(r for r in requirements(os.path.join(ROOT, "requirements.txt")) if r.name == "gradio")
    assert version in gradio.specifier


def requirements(path: str) -> list:
    """The requirement lines of a pip requirements file, comments and blank lines left out, parsed by `packaging`."""
    from packaging.requirements import Requirement

    with open(path) as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [Requirement(line) for line in lines if line]


def test_every_requirement_line_parses_and_names_a_range():
    # pip reads these files leniently; packaging (what tools such as Spaces' builder use) does not
    for name in ("requirements.txt", "requirements-test.txt"):
        for requirement in requirements(os.path.join(ROOT, name)):
            assert requirement.specifier, f"{name}: {requirement.name} has no version range"
