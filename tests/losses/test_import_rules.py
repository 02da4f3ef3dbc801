"""Import rule (docs/architecture.md): kdscene.losses needs neither Lightning, Hydra, data nor module."""

import subprocess
import sys


def test_losses_import_without_lightning_hydra_data_or_module():
    code = (
        "import sys; import kdscene.losses; "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'kdscene.data', "
        "'kdscene.module', 'kdscene.cli') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
