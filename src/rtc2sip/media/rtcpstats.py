"""RTCP reception statistics and the report blocks built from them (RFC 3550 §6.4, appendix A), and
NTP time (RFC 3550 §4).

:class:`ReceiveStatistics` is RFC 3550 A.1 (sequence validation with wrap), A.3 (expected, lost,
fraction lost) and A.8 (interarrival jitter) for one received SSRC, fed with times by the caller (no
clock in here); :meth:`ReceiveStatistics.report_block` is the :class:`~rtc2sip.media.rtcp.ReportBlock`
of the next SR or RR, with LSR/DLSR from the source's last SR. :func:`round_trip_time` reads the RTT
back from a peer's block about our stream (§6.4.1). The packets themselves are :mod:`rtc2sip.media.rtcp`.
"""

from __future__ import annotations

from .rtcp import ReportBlock

__all__ = ["MAX_DROPOUT", "MAX_MISORDER", "NTP_EPOCH_OFFSET", "RTP_SEQ_MOD", "ReceiveStatistics", "ntp_from_unix",
           "ntp_middle", "round_trip_time", "unix_from_ntp"]

# --- time (RFC 3550 §4) -------------------------------------------------------------------------------

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a Unix time."""
    return round((seconds + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    return ntp / (1 << 32) - NTP_EPOCH_OFFSET


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR/DLSR unit of 1/65536 s (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """RTT in seconds from a report block about our stream (RFC 3550 §6.4.1, figure 2): A - LSR - DLSR.

    None when the peer has not received an SR from us yet (LSR 0), or when clocks make it negative.
    """
    if block.lsr == 0:
        return None
    rtt = (ntp_middle(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:
        return None
    return rtt / 65536


# --- receive statistics (RFC 3550 appendix A) ---------------------------------------------------------

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100


class ReceiveStatistics:
    """One received SSRC's statistics for its report block (RFC 3550 A.1, A.3, A.8).

    ``min_sequential`` is A.1's probation: that many in-order packets before a source counts. The
    default follows the RFC; 0 makes a source valid from its first packet, which suits a stream
    already authenticated by SRTP.
    """

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_cycles",
        "_expected_prior",
        "_jitter",
        "_last_sr",
        "_last_sr_arrival",
        "_max_seq",
        "_min_sequential",
        "_probation",
        "_received_prior",
        "_started",
        "_transit",
        "clock_rate",
        "received",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int, min_sequential: int = 2) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.received = 0
        self._max_seq = 0
        self._cycles = 0
        self._base_seq = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._min_sequential = min_sequential
        self._probation = min_sequential
        self._started = False
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: int | None = None
        self._jitter = 0.0
        self._last_sr = 0
        self._last_sr_arrival = 0.0

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def _update_seq(self, seq: int) -> bool:
        """RFC 3550 A.1 update_seq, line for line."""
        udelta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            if seq == (self._max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self._probation = self._min_sequential - 1
                self._max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += RTP_SEQ_MOD  # wrapped
            self._max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # A very large jump: believe it only when the next packet confirms it (source restarted).
            if seq == self._bad_seq:
                self._init_seq(seq)
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted as received (A.3 lets "lost" go negative).
        self.received += 1
        return True

    def update(self, sequence_number: int, timestamp: int, arrival: float) -> bool:
        """Account one packet; ``arrival`` in seconds on any monotonic clock. False: not (yet) valid."""
        if not self._started:
            self._started = True
            self._init_seq(sequence_number)
            self._max_seq = (sequence_number - 1) & 0xFFFF
            if self._probation == 0:
                self._max_seq = sequence_number
                self.received = 1
                self._update_jitter(timestamp, arrival)
                return True
        if not self._update_seq(sequence_number):
            return False
        self._update_jitter(timestamp, arrival)
        return True

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        # A.8 in timestamp units; transit is taken modulo 2^32 so timestamp wrap-around cancels out.
        transit = (int(arrival * self.clock_rate) - timestamp) & 0xFFFFFFFF
        if self._transit is not None:
            d = (transit - self._transit) & 0xFFFFFFFF
            if d & 0x80000000:
                d = 0x100000000 - d
            self._jitter += (d - self._jitter) / 16
        self._transit = transit

    def on_sender_report(self, ntp_timestamp: int, arrival: float) -> None:
        """Remember the source's last SR for LSR/DLSR (RFC 3550 §6.4.1)."""
        self._last_sr = ntp_middle(ntp_timestamp)
        self._last_sr_arrival = arrival

    @property
    def extended_highest_sequence(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self.extended_highest_sequence - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative lost (A.3), clamped to the report block's signed 24 bits."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units (A.8)."""
        return int(self._jitter)

    def report_block(self, now: float) -> ReportBlock:
        """The block for our next SR/RR; starts a new interval for ``fraction_lost`` (A.3)."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval == 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        dlsr = 0
        if self._last_sr:
            dlsr = max(0, min(0xFFFFFFFF, int((now - self._last_sr_arrival) * 65536)))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            packets_lost=self.lost,
            highest_sequence=self.extended_highest_sequence & 0xFFFFFFFF,
            jitter=self.jitter,
            lsr=self._last_sr,
            dlsr=dlsr,
        )
