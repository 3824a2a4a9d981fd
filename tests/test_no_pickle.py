"""Loading never executes code: no module of the library, its projects or
experiments reads pickles (checkpoints are orbax arrays + JSON, exports
safetensors + JSON, data-iterator states and webdataset indexes JSON)."""
from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('multimodal', 'projects', 'experiments')
# Modules whose loaders run code stored in the file they read.
CODE_LOADERS = {'pickle', 'cPickle', '_pickle', 'cloudpickle', 'dill',
                'joblib', 'shelve', 'marshal', 'jsonpickle'}


def _sources():
  for package in PACKAGES:
    yield from sorted((REPO / package).rglob('*.py'))


def _problems(path: pathlib.Path, root: pathlib.Path = REPO) -> list[str]:
  tree = ast.parse(path.read_text(), str(path))
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [f'imports {a.name}' for a in node.names
              if a.name.split('.')[0] in CODE_LOADERS]
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module.split('.')[0] in CODE_LOADERS:
        out.append(f'imports from {node.module}')
    elif isinstance(node, ast.Call):
      name = ast.unparse(node.func)
      kwargs = {k.arg: k.value for k in node.keywords}
      if name.endswith(('np.load', 'numpy.load')):
        flag = kwargs.get('allow_pickle')
        if flag is not None and not (isinstance(flag, ast.Constant)
                                     and flag.value is False):
          out.append(f'{name}(allow_pickle=...) at line {node.lineno}')
      if name.endswith('torch.load'):
        flag = kwargs.get('weights_only')
        if not (isinstance(flag, ast.Constant) and flag.value is True):
          out.append(f'torch.load without weights_only=True at line '
                     f'{node.lineno}')
      if name.endswith(('pd.read_pickle', 'pandas.read_pickle')):
        out.append(f'{name} at line {node.lineno}')
  return [f'{path.relative_to(root)}: {p}' for p in out]


def test_no_module_loads_pickles():
  sources = list(_sources())
  assert len(sources) > 50  # the scan sees the packages
  problems = [p for path in sources for p in _problems(path)]
  assert not problems, problems


def test_the_scan_catches_each_kind(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('import pickle\nfrom dill import loads\nimport numpy as np\n'
                 'np.load("x", allow_pickle=True)\nimport torch\n'
                 'torch.load("w")\n')
  found = _problems(bad, tmp_path)
  assert len(found) == 4, found
