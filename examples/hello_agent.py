"""An agent in Python: the order-status flow beside this file, on the embedded models.

    python examples/hello_agent.py    # then call http://localhost:8080 from a browser
"""

from pathlib import Path

import callwright

settings = callwright.Settings(
    flows_dir=Path(__file__).parent / "flows",  # YAML flows; order_status calls tools.py
    default_flow="order_status",
)

if __name__ == "__main__":
    callwright.serve(settings)  # Twilio webhook, media streams, WebRTC, API and admin
