//! Fetching a control image given as an `https` URL: only public https hosts, a size
//! cap counted on the bytes as they stream in (a chunked or compressed body declares
//! no honest length), a timeout, and every redirect re-checked (a public URL must not
//! bounce the edge to a private address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::StreamExt;

use worker::url::Host;
use worker::{Fetch, Method, Request, RequestInit, RequestRedirect, Url};

use super::image::MAX_IMAGE_BYTES;

const TIMEOUT_MS: u32 = 10_000;
const MAX_REDIRECTS: usize = 3;

/// Refuses URLs the edge must never fetch. Hostnames that resolve to private
/// addresses cannot be checked here (no DNS API), but Cloudflare does not route
/// Worker subrequests to private networks.
pub fn check_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|_| "is not a valid URL".to_string())?;
    if url.scheme() != "https" {
        return Err(format!(
            "URL scheme `{}` is not allowed; use https",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL must not carry credentials".into());
    }
    if url.port().is_some_and(|p| p != 443) {
        return Err("URL must use the default https port".into());
    }
    match url.host() {
        None => return Err("URL has no host".into()),
        Some(Host::Ipv4(ip)) if !is_public_v4(ip) => {
            return Err("URL points at a private or reserved address".into());
        }
        Some(Host::Ipv6(ip)) if !is_public_v6(ip) => {
            return Err("URL points at a private or reserved address".into());
        }
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let local = d == "localhost"
                || [".localhost", ".local", ".internal", ".lan", ".home.arpa"]
                    .iter()
                    .any(|s| d.ends_with(s))
                || !d.contains('.');
            if local {
                return Err("URL points at a local host".into());
            }
            if let Ok(ip) = d.parse::<IpAddr>() {
                let public = match ip {
                    IpAddr::V4(v4) => is_public_v4(v4),
                    IpAddr::V6(v6) => is_public_v6(v6),
                };
                if !public {
                    return Err("URL points at a private or reserved address".into());
                }
            }
        }
        Some(_) => {}
    }
    Ok(url)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// Downloads the image at `raw`, following at most three checked redirects.
pub async fn fetch_image(raw: &str) -> Result<Vec<u8>, String> {
    let mut url = check_url(raw)?;
    for _ in 0..=MAX_REDIRECTS {
        let mut init = RequestInit::new();
        init.with_method(Method::Get)
            .with_redirect(RequestRedirect::Manual);
        let req = Request::new_with_init(url.as_str(), &init)
            .map_err(|_| "could not be requested".to_string())?;
        let signal = worker::AbortSignal::from(web_sys_timeout(TIMEOUT_MS));
        let mut resp = Fetch::Request(req)
            .send_with_signal(&signal)
            .await
            .map_err(|_| "could not be fetched (connection failed or timed out)".to_string())?;
        let status = resp.status_code();
        if (300..400).contains(&status) {
            let location = resp
                .headers()
                .get("location")
                .ok()
                .flatten()
                .ok_or("redirected without a location")?;
            let next = url
                .join(&location)
                .map_err(|_| "redirected to an invalid URL".to_string())?;
            url = check_url(next.as_str()).map_err(|e| format!("redirected: {e}"))?;
            continue;
        }
        if status != 200 {
            return Err(format!(
                "could not be fetched: the server answered HTTP {status}"
            ));
        }
        let declared = resp
            .headers()
            .get("content-length")
            .ok()
            .flatten()
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_IMAGE_BYTES) {
            return Err(format!("is larger than {} MB", MAX_IMAGE_BYTES / 1_048_576));
        }
        let mut stream = resp
            .stream()
            .map_err(|_| "download could not be read".to_string())?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| "download was interrupted".to_string())?;
            append_capped(&mut bytes, &chunk, MAX_IMAGE_BYTES)?;
        }
        return Ok(bytes);
    }
    Err("redirected too many times".into())
}

/// Appends a downloaded chunk unless that would pass `cap` bytes: the download stops
/// there, whatever length the server declared.
pub fn append_capped(bytes: &mut Vec<u8>, chunk: &[u8], cap: usize) -> Result<(), String> {
    if bytes.len().saturating_add(chunk.len()) > cap {
        return Err(format!("is larger than {} MB", cap / 1_048_576));
    }
    bytes.extend_from_slice(chunk);
    Ok(())
}

fn web_sys_timeout(ms: u32) -> worker::web_sys::AbortSignal {
    worker::web_sys::AbortSignal::timeout_with_u32(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_urls_pass() {
        for ok in [
            "https://segmind-sd-models.s3.us-east-1.amazonaws.com/display_images/a.png",
            "https://example.com:443/x.jpg",
            "https://8.8.8.8/x.jpg",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_download_stops_at_the_cap_whatever_was_declared() {
        let mut got = Vec::new();
        let chunk = vec![0u8; 4 * 1024 * 1024];
        append_capped(&mut got, &chunk, MAX_IMAGE_BYTES).unwrap();
        append_capped(&mut got, &chunk, MAX_IMAGE_BYTES).unwrap();
        let err = append_capped(&mut got, &chunk, MAX_IMAGE_BYTES).unwrap_err();
        assert_eq!(err, "is larger than 10 MB");
        assert_eq!(
            got.len(),
            8 * 1024 * 1024,
            "the chunk past the cap is not kept"
        );
        append_capped(&mut got, &vec![0; 2 * 1024 * 1024], MAX_IMAGE_BYTES)
            .expect("exactly the cap is allowed");
    }

    #[test]
    fn private_local_and_non_https_targets_are_refused() {
        for bad in [
            "http://example.com/a.png",
            "file:///etc/passwd",
            "https://127.0.0.1/a.png",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/a.png",
            "https://[fe80::1]/a.png",
            "https://[::ffff:10.0.0.1]/a.png",
            "https://10.1.2.3/a.png",
            "https://192.168.0.1/a.png",
            "https://100.64.0.1/a.png",
            "https://localhost/a.png",
            "https://metadata.google.internal/a",
            "https://intranet/a.png",
            "https://user:pw@example.com/a.png",
            "https://example.com:8443/a.png",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
