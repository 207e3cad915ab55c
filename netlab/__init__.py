"""netlab: real Linux network labs from a scenario file, proven with real packets.

The library's small API is netlab.api (load, parse, up, verify, down); netlab.model.load and
netlab.model.parse give a Lab. docs/architecture.md walks through the layers.
"""

__version__ = "0.1.0"
