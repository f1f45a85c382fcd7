"""The ``loss`` group's code: chat templates, rendering into typed spans, template mining, the mask scopes and
their audit CLI."""
