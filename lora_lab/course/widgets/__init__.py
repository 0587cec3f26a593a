"""Interactive controls for the notebooks: move a slider, see the answer at once.

Every widget here has three layers, so that the idea works with or without a live front end:

1. a plain function that computes the answer (``LowRank.at``, :func:`lora_budget`,
   :func:`first_update_norm`, :func:`classify_message`, ...): unit-tested, no front end needed;
2. a function that draws it (a matplotlib ``Figure`` built without ``pyplot``, so a redraw from a slider never
   leaks a stray figure into the next cell, or a table with an HTML and a plain-text form);
3. a thin ``*_widget`` function that wires ipywidgets controls to 1 and 2.

The default state is always displayed first as an ordinary output (a PNG figure or a table), and a slider
redraws that same output in place (a display id). So a notebook read on GitHub or nbviewer, or run under
nbval, shows the default picture, and re-running the cell in JupyterLab or Colab gives the live control.
A bad value (rank 0, a rank above the layer's width, an empty message) cannot break a widget: the controls
limit what can be chosen, and anything else shows its error message in place of the answer.

* :mod:`lora_lab.course.widgets.display` - how every control shows itself, with or without a live front end
* :mod:`lora_lab.course.widgets.low_rank` - notebook 1: best rank-k approximation, singular values
* :mod:`lora_lab.course.widgets.budget` - notebook 2: the LoRA budget calculator and the scaling explorer
* :mod:`lora_lab.course.widgets.live_training` - notebook 4: live curves and a Stop button
* :mod:`lora_lab.course.widgets.playground` - notebook 6: try your own message with each adapter
"""
from .budget import (
           CALCULATOR_MODELS,
           SCALING_RULE_LABELS,
           UPDATE_RANKS,
           LoRABudget,
           budget_report,
           draw_first_update,
           first_update_norm,
           lora_budget,
           lora_calculator,
           meta_classifier,
           safetensors_bytes,
           scaling_explorer,
           scaling_factor,
)
from .display import (
           CONTROLS_NOTE,
           NO_STOP_HINT,
           NO_WIDGETS_HINT,
           Interactive,
           Report,
           in_kernel,
           interactive,
           live_frontend,
)
from .live_training import LiveTraining, TrainingCurves, draw_training, ui_event_poller
from .low_rank import (
           LowRank,
           RankApprox,
           decaying_matrix,
           draw_rank,
           draw_spectrum,
           rank_slider,
           rank_summary,
           spectrum_slider,
)
from .playground import AdapterChoice, AdapterPlayground, Prediction, classify_message, message_playground

__all__ = ["in_kernel", "live_frontend", "Report", "Interactive", "interactive", "CONTROLS_NOTE",
           "NO_WIDGETS_HINT", "NO_STOP_HINT", "LowRank", "RankApprox", "rank_summary", "decaying_matrix",
           "draw_rank", "draw_spectrum", "rank_slider", "spectrum_slider", "CALCULATOR_MODELS", "SCALING_RULE_LABELS",
           "scaling_factor", "meta_classifier", "LoRABudget", "lora_budget", "budget_report", "lora_calculator",
           "first_update_norm", "draw_first_update", "scaling_explorer", "UPDATE_RANKS", "safetensors_bytes",
           "TrainingCurves", "draw_training", "LiveTraining", "ui_event_poller", "Prediction", "classify_message",
           "AdapterChoice", "AdapterPlayground", "message_playground"]
