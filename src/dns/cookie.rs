//! DNS Cookies (RFC 7873), with server cookies made as RFC 9018 says: version 1, a timestamp,
//! and SipHash-2-4 over the client cookie, version, reserved bytes, timestamp and the client's
//! address, keyed with this instance's secret. A client that returns a server cookie we made
//! for its address within the last hour proves it receives what we send to that address: a
//! forged source cannot, so such a client is spared the response rate limit (as Knot and BIND
//! do). Pure: the caller gives the time; nothing here sends or parses a packet.

use std::{hash::Hasher, net::IpAddr};

use siphasher::sip::SipHasher24;

use crate::wire::Cookie;

/// The server cookie's version (RFC 9018 4.2).
const VERSION: u8 = 1;
/// A server cookie older than this is not valid (RFC 9018 4.3: one hour).
const LIFETIME_SECS: u32 = 3600;
/// Nor one stamped more than this ahead of our clock (RFC 9018 4.3: five minutes).
const AHEAD_SECS: u32 = 300;

/// The length of the server cookies this server makes.
pub const SERVER_COOKIE_LEN: usize = 16;

/// This instance's secret, with which it makes and checks server cookies.
#[derive(Clone)]
pub struct ServerCookies {
    secret: [u8; 16],
}

impl ServerCookies {
    /// With a secret from the system's random source.
    pub fn random() -> Result<ServerCookies, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut secret = [0; 16];
        ring::rand::SystemRandom::new().fill(&mut secret)?;
        Ok(ServerCookies { secret })
    }

    /// The server cookie for a client that sent `client` from `ip`, at `now` (seconds since the
    /// epoch, as RFC 9018 counts them: modulo 2^32).
    pub fn make(&self, client: [u8; 8], ip: IpAddr, now: u32) -> [u8; SERVER_COOKIE_LEN] {
        let mut cookie = [0; SERVER_COOKIE_LEN];
        cookie[0] = VERSION;
        cookie[4..8].copy_from_slice(&now.to_be_bytes());
        let hash = self.hash(client, &cookie[..8], ip);
        cookie[8..].copy_from_slice(&hash);
        cookie
    }

    /// Whether `cookie` holds a server cookie we made for `ip`, still valid at `now`.
    pub fn valid(&self, cookie: &Cookie<'_>, ip: IpAddr, now: u32) -> bool {
        let Ok(server) = <&[u8; SERVER_COOKIE_LEN]>::try_from(cookie.server()) else {
            return false;
        };
        if server[0] != VERSION {
            return false;
        }
        let stamped = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
        // Serial number arithmetic (RFC 1982): the clock wraps in 2106.
        let age = now.wrapping_sub(stamped);
        let fresh = age <= LIFETIME_SECS || age.wrapping_neg() <= AHEAD_SECS;
        fresh && self.hash(cookie.client(), &server[..8], ip) == server[8..]
    }

    fn hash(&self, client: [u8; 8], header: &[u8], ip: IpAddr) -> [u8; 8] {
        let mut hasher = SipHasher24::new_with_key(&self.secret);
        hasher.write(&client);
        hasher.write(header);
        match ip.to_canonical() {
            IpAddr::V4(v4) => hasher.write(&v4.octets()),
            IpAddr::V6(v6) => hasher.write(&v6.octets()),
        }
        hasher.finish().to_le_bytes()
    }
}

/// Seconds since the epoch, modulo 2^32, as server cookies count them.
pub fn now_secs() -> u32 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1_800_000_000;

    fn cookies() -> ServerCookies {
        ServerCookies { secret: [7; 16] }
    }

    fn returned(client: [u8; 8], server: &[u8]) -> Vec<u8> {
        [&client[..], server].concat()
    }

    fn valid(cookies: &ServerCookies, option: &[u8], ip: IpAddr, now: u32) -> bool {
        let cookie = Cookie::new(option).expect("a cookie option");
        cookies.valid(&cookie, ip, now)
    }

    #[test]
    fn a_server_cookie_is_valid_for_its_client_and_address_for_an_hour() {
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        let client = [1, 2, 3, 4, 5, 6, 7, 8];
        let server = cookies().make(client, ip, NOW);
        assert_eq!(&server[..8], &[1, 0, 0, 0, 0x6b, 0x49, 0xd2, 0x00]);
        let cookie = returned(client, &server);
        assert!(valid(&cookies(), &cookie, ip, NOW));
        assert!(valid(&cookies(), &cookie, ip, NOW + 3600));
        assert!(!valid(&cookies(), &cookie, ip, NOW + 3601), "an hour old");
        assert!(
            valid(&cookies(), &cookie, ip, NOW - 300),
            "our clock a little behind"
        );
        assert!(!valid(&cookies(), &cookie, ip, NOW - 301));
        let elsewhere: IpAddr = "198.51.100.8".parse().expect("ip");
        assert!(
            !valid(&cookies(), &cookie, elsewhere, NOW),
            "another address"
        );
        let other_client = returned([9; 8], &server);
        assert!(
            !valid(&cookies(), &other_client, ip, NOW),
            "another client cookie"
        );
        let other_secret = ServerCookies { secret: [8; 16] };
        assert!(!valid(&other_secret, &cookie, ip, NOW), "another server's");
    }

    #[test]
    fn a_client_cookie_alone_or_a_forged_server_cookie_is_not_valid() {
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        let client = [1; 8];
        assert!(!valid(&cookies(), &returned(client, &[]), ip, NOW));
        let mut forged = cookies().make(client, ip, NOW);
        forged[15] ^= 1;
        assert!(!valid(&cookies(), &returned(client, &forged), ip, NOW));
        let mut other_version = cookies().make(client, ip, NOW);
        other_version[0] = 2;
        assert!(!valid(
            &cookies(),
            &returned(client, &other_version),
            ip,
            NOW
        ));
        let long = [0; 32];
        assert!(!valid(&cookies(), &returned(client, &long), ip, NOW));
    }
}
