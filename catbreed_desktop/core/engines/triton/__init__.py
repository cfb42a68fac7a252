"""Triton Inference Server: `catbreed serve` (`server`, kept from outliving its parent by
`watchdog`) and the engine that classifies on such a server (`client`, over HTTP with
`kserve_http` or over gRPC)."""
