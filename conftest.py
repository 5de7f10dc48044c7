"""Root conftest: `--doctest-modules` imports every module; optional integrations need their extra."""
import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("lightning") is None:
    collect_ignore_glob.append("src/forgetless/integrations/lightning.py")
if importlib.util.find_spec("transformers") is None:
    collect_ignore_glob.append("src/forgetless/integrations/huggingface.py")
if importlib.util.find_spec("ray") is None:
    collect_ignore_glob.append("src/forgetless/executors/ray_executor.py")
