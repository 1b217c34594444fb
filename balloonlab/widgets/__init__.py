"""ipywidgets for balloonlab: :class:`BalloonPanel` (what ``%balloon panel`` shows) and the views it is made of.

One module per widget family: ``controls`` (interval and target sliders), ``stats_table`` (the live stats, the
last-update age, the doctor's verdict), ``plot`` (bqplot time series), ``events`` (event log), ``virtqueue`` (the
emulated stats queue), ``panel`` (the composite).  Only ipywidgets and bqplot: no custom JavaScript, so the panel
works in JupyterLab 4, Notebook 7 and Voila alike.
"""

from .controls import DeviceBinding, IntervalControl, TargetControl
from .events import EventLog
from .panel import BalloonPanel
from .plot import MemoryPlot
from .stats_table import DoctorView, LastUpdateView, StatsTable
from .virtqueue import VirtqueueView, decode_report

__all__ = [
    "BalloonPanel",
    "DeviceBinding",
    "DoctorView",
    "EventLog",
    "IntervalControl",
    "LastUpdateView",
    "MemoryPlot",
    "StatsTable",
    "TargetControl",
    "VirtqueueView",
    "decode_report",
]
