"""Old home of the head geometry; it now lives in :mod:`finwidget.model_parts`.

``HeadGeometry`` is :class:`~finwidget.model_parts.ModelGeometry` under its old name, and
``o_proj_of`` is :func:`~finwidget.model_parts.head_output_site`; both stay importable
from here so existing code keeps working.
"""

from finwidget.model_parts import ModelGeometry as HeadGeometry
from finwidget.model_parts import decoder_layers, module_device
from finwidget.model_parts import head_output_site as o_proj_of

__all__ = ["HeadGeometry", "decoder_layers", "module_device", "o_proj_of"]
