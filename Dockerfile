# One image for both processes: `python -m webapp` (web) and `python -m engine` (engine).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY engine ./engine
COPY webapp ./webapp
COPY sql ./sql
COPY wsgi.py ./

RUN useradd --system --home /app tributary && chown -R tributary /app
USER tributary

ENV HOST=0.0.0.0 PORT=3000
EXPOSE 3000
CMD ["python", "-m", "webapp"]
