//! TFTP packets (RFC 1350) with option extension (RFC 2347): decode any bytes without
//! panicking, encode what the server sends.

/// Smallest and largest block size RFC 2348 allows; 512 without the option.
pub const MIN_BLKSIZE: u16 = 8;
/// See [`MIN_BLKSIZE`].
pub const MAX_BLKSIZE: u16 = 65464;
/// Block size when the client asks for none.
pub const DEFAULT_BLKSIZE: u16 = 512;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// Transfer mode of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Raw bytes.
    Octet,
    /// Text with CR LF line ends on the wire (RFC 764's NVT ASCII).
    NetAscii,
    /// The obsolete mail mode (refused).
    Mail,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        match text.to_ascii_lowercase().as_str() {
            "octet" => Some(Mode::Octet),
            "netascii" => Some(Mode::NetAscii),
            "mail" => Some(Mode::Mail),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::NetAscii => "netascii",
            Mode::Mail => "mail",
        }
    }
}

/// A read or write request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The file name as sent.
    pub filename: String,
    /// Transfer mode.
    pub mode: Mode,
    /// Options in the order sent, names in lower case (RFC 2347 names are case-insensitive).
    pub options: Vec<(String, String)>,
}

/// The error codes of RFC 1350 and RFC 2347.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: see the message.
    NotDefined,
    /// 1.
    FileNotFound,
    /// 2.
    AccessViolation,
    /// 4.
    IllegalOperation,
    /// 5.
    UnknownTransferId,
    /// 8: option negotiation refused.
    OptionRefused,
    /// Any other code.
    Other(u16),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(c) => c,
        }
    }

    /// The code of a received ERROR packet.
    pub fn from_code(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            8 => ErrorCode::OptionRefused,
            c => ErrorCode::Other(c),
        }
    }
}

/// One TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Read request.
    Rrq(Request),
    /// Write request.
    Wrq(Request),
    /// A block of the file.
    Data {
        /// Block number (wraps to 0 after 65535).
        block: u16,
        /// At most the block size; shorter means the last block.
        data: Vec<u8>,
    },
    /// Acknowledges a block (0: the options).
    Ack {
        /// Block number.
        block: u16,
    },
    /// Ends the transfer.
    Error {
        /// Error code.
        code: ErrorCode,
        /// Message for people.
        message: String,
    },
    /// Options the server accepted (RFC 2347).
    Oack {
        /// Name and value of each.
        options: Vec<(String, String)>,
    },
}

/// Bytes that are not a TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the packet's fixed part.
    #[error("packet too short")]
    TooShort,
    /// An opcode RFC 1350/2347 does not define.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field without its terminating NUL.
    #[error("string field not NUL-terminated")]
    Unterminated,
    /// A string field that is not UTF-8.
    #[error("string field is not UTF-8")]
    NotUtf8,
    /// A mode other than octet, netascii or mail.
    #[error("unknown transfer mode {0:?}")]
    BadMode(String),
    /// An option name without a value.
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
}

/// NUL-terminated strings, one after the other.
struct Strings<'a>(&'a [u8]);

impl Strings<'_> {
    fn next(&mut self) -> Option<Result<String, DecodeError>> {
        if self.0.is_empty() {
            return None;
        }
        let Some(end) = self.0.iter().position(|&b| b == 0) else {
            return Some(Err(DecodeError::Unterminated));
        };
        let text = std::str::from_utf8(&self.0[..end]).map(str::to_owned).map_err(|_| DecodeError::NotUtf8);
        self.0 = &self.0[end + 1..];
        Some(text)
    }
}

/// Decodes one datagram.
pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let (opcode, rest) = match bytes {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(DecodeError::TooShort),
    };
    let number = || match rest {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(DecodeError::TooShort),
    };
    match opcode {
        RRQ | WRQ => {
            let mut strings = Strings(rest);
            let filename = strings.next().ok_or(DecodeError::Unterminated)??;
            let mode_text = strings.next().ok_or(DecodeError::Unterminated)??;
            let mode = Mode::parse(&mode_text).ok_or(DecodeError::BadMode(mode_text))?;
            let options = options(&mut strings)?;
            let request = Request { filename, mode, options };
            Ok(if opcode == RRQ { Packet::Rrq(request) } else { Packet::Wrq(request) })
        }
        DATA => Ok(Packet::Data { block: number()?, data: rest[2..].to_vec() }),
        ACK => Ok(Packet::Ack { block: number()? }),
        ERROR => {
            let code = ErrorCode::from_code(number()?);
            // Some clients omit the NUL after the message; take what is there.
            let text = &rest[2..];
            let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
            Ok(Packet::Error { code, message: String::from_utf8_lossy(text).into_owned() })
        }
        OACK => Ok(Packet::Oack { options: options(&mut Strings(rest))? }),
        other => Err(DecodeError::UnknownOpcode(other)),
    }
}

fn options(strings: &mut Strings) -> Result<Vec<(String, String)>, DecodeError> {
    let mut out = Vec::new();
    while let Some(name) = strings.next() {
        let name = name?;
        let value = strings.next().ok_or_else(|| DecodeError::OptionWithoutValue(name.clone()))??;
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

impl Packet {
    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                out.extend_from_slice(
                    &(if matches!(self, Packet::Rrq(_)) { RRQ } else { WRQ }).to_be_bytes(),
                );
                string(&mut out, &r.filename);
                string(&mut out, r.mode.as_str());
                for (name, value) in &r.options {
                    string(&mut out, name);
                    string(&mut out, value);
                }
            }
            Packet::Data { block, data } => encode_data(*block, data, &mut out),
            Packet::Ack { block } => {
                out.extend_from_slice(&ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&ERROR.to_be_bytes());
                out.extend_from_slice(&code.code().to_be_bytes());
                string(&mut out, message);
            }
            Packet::Oack { options } => {
                out.extend_from_slice(&OACK.to_be_bytes());
                for (name, value) in options {
                    string(&mut out, name);
                    string(&mut out, value);
                }
            }
        }
        out
    }
}

/// A DATA packet into `out` (cleared first), without copying the block into a [`Packet`].
pub fn encode_data(block: u16, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(4 + data.len());
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

/// Text in netascii: every LF becomes CR LF and every lone CR becomes CR NUL (RFC 764).
pub fn to_netascii(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for &b in bytes {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            b => out.push(b),
        }
    }
    out
}

/// The inverse of [`to_netascii`] (what a client does on receipt).
pub fn from_netascii(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.iter().copied().peekable();
    while let Some(b) = iter.next() {
        if b == b'\r' {
            match iter.peek() {
                Some(b'\n') => {
                    iter.next();
                    out.push(b'\n');
                }
                Some(0) => {
                    iter.next();
                    out.push(b'\r');
                }
                _ => out.push(b'\r'),
            }
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_request_with_options_decodes_as_atftp_sends_it() {
        let bytes = b"\x00\x01SEP001A2B3C4D5E.cnf.xml\x00octet\x00BLKSIZE\x001428\x00tsize\x000\x00";
        let Packet::Rrq(r) = decode(bytes).unwrap() else { panic!("not a RRQ") };
        assert_eq!(r.filename, "SEP001A2B3C4D5E.cnf.xml");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(r.options, vec![("blksize".into(), "1428".into()), ("tsize".into(), "0".into())]);
        assert_eq!(
            decode(&Packet::Rrq(r.clone()).encode()).unwrap(),
            Packet::Rrq(Request { options: r.options.clone(), ..r })
        );
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        assert_eq!(decode(b""), Err(DecodeError::TooShort));
        assert_eq!(decode(b"\x00"), Err(DecodeError::TooShort));
        assert_eq!(decode(b"\x00\x09"), Err(DecodeError::UnknownOpcode(9)));
        assert_eq!(decode(b"\x00\x01name"), Err(DecodeError::Unterminated));
        assert_eq!(decode(b"\x00\x01name\x00"), Err(DecodeError::Unterminated));
        assert_eq!(decode(b"\x00\x01name\x00binary\x00"), Err(DecodeError::BadMode("binary".into())));
        assert_eq!(decode(b"\x00\x01n\xff\x00octet\x00"), Err(DecodeError::NotUtf8));
        assert_eq!(
            decode(b"\x00\x01n\x00octet\x00tsize\x00"),
            Err(DecodeError::OptionWithoutValue("tsize".into()))
        );
        assert_eq!(decode(b"\x00\x04\x00"), Err(DecodeError::TooShort));
        assert_eq!(
            decode(b"\x00\x05\x00\x01no nul"),
            Ok(Packet::Error { code: ErrorCode::FileNotFound, message: "no nul".into() })
        );
    }

    #[test]
    fn netascii_turns_line_ends_into_cr_lf_and_back() {
        assert_eq!(to_netascii(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
        assert_eq!(from_netascii(&to_netascii(b"a\nb\rc\r\n")), b"a\nb\rc\r\n");
    }
}
