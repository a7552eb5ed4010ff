"""A tiny Flask app with no Dockerfile: `stackyard dockerize` generates one for it."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "hello from Flask on Stackyard\n"
