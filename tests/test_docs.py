"""The docs and the code agree: the main job is the configuration docs/results.md names and
measured; the README's commands and limits hold; docs cite the repository, not its history."""

import os
import re
import subprocess

from conftest import REPO_ROOT


def _read(*path):
  with open(os.path.join(REPO_ROOT, *path)) as f:
    return f.read()


def test_the_main_job_is_the_configuration_results_names_and_measured():
  import configs.mbii as mbii_configs
  import configs.study as study_configs
  named = re.search(r"Main job: `configs/mbii\.py:(\w+)`, measured as `configs/study\.py:(\w+)`",
                    _read("docs", "results.md"))
  assert named, "docs/results.md names the main job's config and the study that measured it"
  variant, measured_as = named.groups()
  main_job = mbii_configs.get_config()                   # what `python -m experiments.mbii` runs
  assert main_job.variant == variant
  study_base = study_configs.get_config(measured_as).base.to_dict()
  for baseline in ("random_search", "evolution"):        # the study's baselines' own settings
    study_base.pop(baseline)
  assert study_base == main_job.to_dict()
  # The measured study ran as cpu_trust_cheap with the trust radius halved: the same config.
  cheap = study_configs.get_config("cpu_trust_cheap")
  cheap.base.outer.trust_radius = 0.25
  assert cheap.base.to_dict() == study_configs.get_config(measured_as).base.to_dict()
  # The yardstick is the main job with beta frozen.
  fixed = mbii_configs.get_config("fixed").to_dict()
  assert fixed.pop("variant") == "fixed" and fixed["schedule"].pop("freeze_beta")
  expected = main_job.to_dict()
  expected.pop("variant")
  expected["schedule"].pop("freeze_beta")
  assert fixed == expected


def test_the_readme_is_a_guide_with_the_two_commands():
  readme = _read("README.md")
  assert len(readme.splitlines()) <= 200
  commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
  assert len(commands) == 2
  assert commands[0].endswith("python -m experiments.mbii --workdir=runs/mbii")
  assert '-m "not slow"' in commands[1]
  ci = _read(".ci", "run")
  assert commands[1].split("&& python -m pytest")[1].strip() in ci       # the fast tier
  assert "-m slow" in ci                                                  # and the rest
  for path in re.findall(r"\]\(([^)#]+)\)", readme):                      # its links resolve
    assert os.path.exists(os.path.join(REPO_ROOT, path)), path


def test_code_and_docs_cite_the_repository_not_its_history():
  result = subprocess.run(
      ["grep", "-rniE", r"issue [0-9]+|issues? #[0-9]+|this (2-core )?machine", "hgrad", "configs",
       "experiments", "benchmarks", "examples", "docs", "README.md", "BUILD_NOTES.md"],
      cwd=REPO_ROOT, capture_output=True, text=True)
  assert result.stdout == "", result.stdout[:2000]
  assert os.path.getsize(os.path.join(REPO_ROOT, "BUILD_NOTES.md")) <= 45 * 1024


def test_the_readme_library_quick_start_runs():
  readme = _read("README.md")
  code = readme.split("## Use hgrad as a library")[1].split("```python")[1].split("```")[0]
  namespace: dict = {}
  exec(compile(code, "README.md", "exec"), namespace)    # noqa: S102 - the README's own code
  import numpy as np
  assert np.shape(namespace["grad"]) == (29,) and np.isfinite(np.asarray(namespace["grad"])).all()
