"""The FastAPI app: REST v1, WebSocket, auth and error mapping. A thin layer over gateway/."""
