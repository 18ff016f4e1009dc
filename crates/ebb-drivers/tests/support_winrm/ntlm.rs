//! The server half of an NTLMv2 login, as a WinRM listener does it over HTTPS (MS-NLMP
//! 3.2.5: CHALLENGE_MESSAGE with a target info and a timestamp, then the
//! AUTHENTICATE_MESSAGE's NTProofStr checked against the account's password). The
//! challenge belongs to the connection, as on Windows: a login whose three messages do not
//! share one connection fails. No message sealing (that is NTLM over plain HTTP), and the
//! channel binding a client may add is not checked.

use super::{b64, unb64};
use hmac::{Hmac, KeyInit, Mac};
use md4::{Digest, Md4};
use std::sync::Mutex;

/// What an `Authorization: Negotiate ...` header leads to.
pub enum Step {
    /// A NEGOTIATE_MESSAGE: answer 401 with this `WWW-Authenticate`.
    Challenge(String),
    /// An AUTHENTICATE_MESSAGE that proves the password.
    LoggedIn,
    /// Anything else.
    Refused,
}

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// One step of the login on a connection whose challenge is kept in `challenge`.
pub fn step(
    authorization: Option<&str>,
    challenge: &Mutex<Option<[u8; 8]>>,
    user: &str,
    password: &str,
) -> Step {
    let Some(msg) = authorization
        .and_then(|a| a.strip_prefix("Negotiate "))
        .map(|t| unb64(t.trim()))
    else {
        return Step::Refused;
    };
    if msg.len() < 12 || &msg[..8] != SIGNATURE {
        return Step::Refused;
    }
    match u32::from_le_bytes([msg[8], msg[9], msg[10], msg[11]]) {
        1 => {
            let c = fresh_challenge();
            *challenge.lock().unwrap() = Some(c);
            Step::Challenge(format!("Negotiate {}", b64(&challenge_message(c))))
        }
        3 => match challenge.lock().unwrap().take() {
            Some(c) if proves_password(&msg, c, user, password) => Step::LoggedIn,
            _ => Step::Refused,
        },
        _ => Step::Refused,
    }
}

fn fresh_challenge() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish().to_le_bytes()
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn av_pair(out: &mut Vec<u8>, id: u16, value: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2): no target name, the flags Windows offers, the
/// challenge, and a target info with the domain, the computer and a timestamp.
fn challenge_message(c: [u8; 8]) -> Vec<u8> {
    let mut info = Vec::new();
    av_pair(&mut info, 2, &utf16("CONTOSO")); // MsvAvNbDomainName
    av_pair(&mut info, 1, &utf16("CAS1")); // MsvAvNbComputerName
    av_pair(&mut info, 7, &0x01DB_6A00_0000_0000u64.to_le_bytes()); // MsvAvTimestamp
    av_pair(&mut info, 0, &[]); // MsvAvEOL
                                // UNICODE, SIGN, SEAL, NTLM, EXTENDED_SESSIONSECURITY, TARGET_INFO, VERSION, 128,
                                // KEY_EXCH, 56.
    let flags: u32 = 0x0000_0001
        | 0x0000_0010
        | 0x0000_0020
        | 0x0000_0200
        | 0x0008_0000
        | 0x0080_0000
        | 0x0200_0000
        | 0x2000_0000
        | 0x4000_0000
        | 0x8000_0000;
    let header = 56u32; // 48 bytes of fields + 8 of version
    let mut m = SIGNATURE.to_vec();
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]); // TargetName: empty
    m.extend_from_slice(&header.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&c);
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&header.to_le_bytes());
    m.extend_from_slice(&[10, 0, 0x4f, 0x45, 0, 0, 0, 15]); // version 10.0.17743, NTLM 15
    m.extend_from_slice(&info);
    m
}

fn hmac_md5(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<md5::Md5> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3): the NTProofStr of its NTLMv2 response is
/// HMAC-MD5(NTOWFv2(password, user, domain), challenge + the rest of the response).
fn proves_password(msg: &[u8], c: [u8; 8], user: &str, password: &str) -> bool {
    let field = |at: usize| -> Option<&[u8]> {
        let len = u16::from_le_bytes([*msg.get(at)?, *msg.get(at + 1)?]) as usize;
        let off = u32::from_le_bytes(msg.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        msg.get(off..off.checked_add(len)?)
    };
    let text = |b: &[u8]| {
        let units: Vec<u16> = b
            .chunks(2)
            .map(|p| u16::from_le_bytes([p[0], *p.get(1).unwrap_or(&0)]))
            .collect();
        String::from_utf16_lossy(&units)
    };
    let (Some(nt), Some(domain), Some(name)) = (field(20), field(28), field(36)) else {
        return false;
    };
    let (domain, name) = (text(domain), text(name));
    if !name.eq_ignore_ascii_case(user) || nt.len() < 16 + 28 {
        return false;
    }
    let nt_hash = Md4::digest(utf16(password));
    let v2 = hmac_md5(
        &nt_hash,
        &utf16(&format!("{}{domain}", name.to_uppercase())),
    );
    let mut proof_input = c.to_vec();
    proof_input.extend_from_slice(&nt[16..]);
    hmac_md5(&v2, &proof_input) == nt[..16]
}
