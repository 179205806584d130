FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY callwright callwright
COPY agent agent
COPY telephony telephony
COPY flows flows
COPY memory memory
COPY admin admin
RUN pip install --no-cache-dir -c constraints.txt \
      --extra-index-url https://download.pytorch.org/whl/cpu .
EXPOSE 8080
CMD ["callwright", "serve"]
