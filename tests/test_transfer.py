"""Cold transfer: once the audio before it has played, the live call's TwiML becomes <Dial>."""

import xml.etree.ElementTree as ET

from pipecat.frames.frames import EndTaskFrame, TTSAudioRawFrame
from pipecat.tests.utils import SleepFrame, run_test

from callwright.agent.frames import TransferCallFrame
from callwright.telephony.twilio.control import TwilioCallControl
from callwright.telephony.twilio.rest import TwilioAccount
from tests.support import ACCOUNT_SID, AUTH_TOKEN

CALL_SID = "CA" + "5" * 32


def _control(rest_standin) -> TwilioCallControl:
    account = TwilioAccount(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                            base_url=rest_standin.base_url)
    return TwilioCallControl(account=account, call_sid=CALL_SID, transfer_allow=("+1555*",))


async def test_transfer_updates_the_call_with_dial(rest_standin):
    control = _control(rest_standin)
    before = len(rest_standin.requests)
    down, up = await run_test(control, frames_to_send=[
        TTSAudioRawFrame(audio=b"\0\0" * 160, sample_rate=8000, num_channels=1),
        TransferCallFrame(to="+15550100999"), SleepFrame(0.5),
    ])
    update = rest_standin.requests[before]
    assert update.method == "POST"
    assert update.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
    dial = ET.fromstring(update.form["Twiml"]).find("./Dial/Number")
    assert dial is not None and dial.text == "+15550100999"
    assert control.transferred_to == "+15550100999"
    assert any(isinstance(f, EndTaskFrame) for f in up)
    assert not any(isinstance(f, TransferCallFrame) for f in down)  # consumed here


async def test_transfer_outside_the_allow_list_is_refused(rest_standin):
    control = _control(rest_standin)
    before = len(rest_standin.requests)
    _, up = await run_test(control, frames_to_send=[TransferCallFrame(to="+4420700000000"),
                                                     SleepFrame(0.2)])
    assert len(rest_standin.requests) == before and control.transferred_to is None
    assert not any(isinstance(f, EndTaskFrame) for f in up)
