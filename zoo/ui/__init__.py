"""The Gradio UI: `layout.build_demo()` lays out the tabs; each tab's module wires its events to the services;
the `*views` modules turn service results into what the tabs show. Nothing here holds logic of its own."""

from zoo.ui.layout import EXAMPLES as EXAMPLES
from zoo.ui.layout import THEME as THEME
from zoo.ui.layout import build_demo as build_demo
from zoo.ui.queuewake import install as install_queue_wake  # noqa: F401
from zoo.ui.refusals import install as install_refusals  # noqa: F401
from zoo.ui.refusals import is_upload as is_upload
from zoo.ui.sessions import install as install_sessions  # noqa: F401
from zoo.ui.style import CSS as CSS
