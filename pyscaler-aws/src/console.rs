//! Reading a new instance's SSH host key fingerprints from its console
//! output, where cloud-init prints them at the end of the first boot.
//!
//! The console output reaches the controller through the EC2 API (signed,
//! over TLS), not through the network the SSH connection crosses, so a key
//! it names can be trusted on first contact where `accept-new` would trust
//! whoever answers first.

/// The line cloud-init prints before the fingerprints.
pub const FINGERPRINTS_BEGIN: &str = "-----BEGIN SSH HOST KEY FINGERPRINTS-----";
/// The line cloud-init prints after them.
pub const FINGERPRINTS_END: &str = "-----END SSH HOST KEY FINGERPRINTS-----";

/// The SHA256 fingerprints (`SHA256:...`, as `ssh-keygen -l` prints them) of
/// the last complete block of host key fingerprints in `console`, in the
/// order printed; `None` when the output holds no complete block yet (the
/// instance is still booting, or its image prints none).
///
/// Lines may carry a prefix (EC2's `ec2: `, a kernel timestamp); MD5
/// fingerprints (old cloud-init) are skipped, so a block of only those gives
/// an empty list. Of several blocks (the instance rebooted), the last counts.
///
/// ```
/// let console = "\
/// ec2: #############################################################
/// ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
/// ec2: 256 SHA256:3mR0mM6Ab1x7dVh9tB3Yk9NuT0a0Uq3cL0kM3xw4y2Q root@ip-172-31-1-5 (ECDSA)
/// ec2: 256 SHA256:Jm1bW5jvXz7dKcE1yQ0q2Lx9QxUj0bD0s3V3u6bq2dE root@ip-172-31-1-5 (ED25519)
/// ec2: -----END SSH HOST KEY FINGERPRINTS-----
/// ec2: #############################################################
/// ";
/// assert_eq!(
///     pyscaler_aws::host_key_fingerprints(console),
///     Some(vec![
///         "SHA256:3mR0mM6Ab1x7dVh9tB3Yk9NuT0a0Uq3cL0kM3xw4y2Q".to_owned(),
///         "SHA256:Jm1bW5jvXz7dKcE1yQ0q2Lx9QxUj0bD0s3V3u6bq2dE".to_owned(),
///     ])
/// );
/// assert_eq!(pyscaler_aws::host_key_fingerprints("booting...\n"), None);
/// ```
pub fn host_key_fingerprints(console: &str) -> Option<Vec<String>> {
    let mut last = None;
    let mut block: Option<Vec<String>> = None;
    for line in console.lines() {
        if line.contains(FINGERPRINTS_BEGIN) {
            block = Some(Vec::new());
        } else if line.contains(FINGERPRINTS_END) {
            if let Some(done) = block.take() {
                last = Some(done);
            }
        } else if let Some(found) = block.as_mut() {
            found.extend(
                line.split_whitespace()
                    .filter(|word| is_sha256(word))
                    .map(str::to_owned),
            );
        }
    }
    last
}

/// `SHA256:` and 43 characters of unpadded base64: a SHA-256 digest as
/// OpenSSH writes it.
fn is_sha256(word: &str) -> bool {
    word.strip_prefix("SHA256:").is_some_and(|digest| {
        digest.len() == 43
            && digest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "SHA256:Jm1bW5jvXz7dKcE1yQ0q2Lx9QxUj0bD0s3V3u6bq2dE";
    const EC: &str = "SHA256:3mR0mM6Ab1x7dVh9tB3Yk9NuT0a0Uq3cL0kM3xw4y2Q";

    #[test]
    fn the_block_is_found_among_boot_messages_with_their_prefixes() {
        let console = format!(
            "[    0.000000] Linux version 6.1.0-18-cloud-amd64\n\
             [   12.345678] cloud-init[512]: Cloud-init v. 22.4.2 running 'modules:final'\n\
             [   12.400001] cloud-init[512]: {FINGERPRINTS_BEGIN}\n\
             [   12.400002] cloud-init[512]: 256 {EC} root@ip-172-31-1-5 (ECDSA)\n\
             [   12.400003] cloud-init[512]: 256 {ED} root@ip-172-31-1-5 (ED25519)\n\
             [   12.400004] cloud-init[512]: 3072 MD5:aa:bb:cc root@ip-172-31-1-5 (RSA)\n\
             [   12.400005] cloud-init[512]: {FINGERPRINTS_END}\n\
             Debian GNU/Linux 12 ip-172-31-1-5 ttyS0\n"
        );
        assert_eq!(
            host_key_fingerprints(&console),
            Some(vec![EC.to_owned(), ED.to_owned()])
        );
    }

    #[test]
    fn an_unfinished_block_is_not_read_yet_and_the_last_block_counts() {
        // The output was cut mid-block (EC2 posts it in pieces): not yet.
        let cut = format!("ec2: {FINGERPRINTS_BEGIN}\nec2: 256 {ED} root@h (ED25519)\n");
        assert_eq!(host_key_fingerprints(&cut), None);
        // After a reboot with new keys, the second block is the truth.
        let twice = format!(
            "{FINGERPRINTS_BEGIN}\n256 {EC} root@h (ECDSA)\n{FINGERPRINTS_END}\n\
             reboot\n\
             {FINGERPRINTS_BEGIN}\n256 {ED} root@h (ED25519)\n{FINGERPRINTS_END}\n"
        );
        assert_eq!(host_key_fingerprints(&twice), Some(vec![ED.to_owned()]));
        // Only MD5 fingerprints: a block, but nothing pyscaler can compare.
        let md5 = format!("{FINGERPRINTS_BEGIN}\n2048 aa:bb:cc:dd /etc/ssh/ssh_host_rsa_key.pub (RSA)\n{FINGERPRINTS_END}\n");
        assert_eq!(host_key_fingerprints(&md5), Some(Vec::new()));
        // A word that only looks like one (too short) is not taken.
        let short =
            format!("{FINGERPRINTS_BEGIN}\n256 SHA256:abc root@h (ED25519)\n{FINGERPRINTS_END}\n");
        assert_eq!(host_key_fingerprints(&short), Some(Vec::new()));
    }
}
