from peftbench.api import evaluate as evaluate
from peftbench.api import export as export
from peftbench.api import load_config as load_config
from peftbench.api import load_trained as load_trained
from peftbench.api import preset as preset
from peftbench.api import report as report
from peftbench.api import run as run
from peftbench.api import score as score
from peftbench.errors import PeftbenchError as PeftbenchError

__version__: str
__all__: list[str]
