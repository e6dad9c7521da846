//! A real SIP phone: Debian's baresip (test-bed), registering as one extension and auto-answering
//! (see `shared/TESTBED.md`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running baresip.
pub struct Baresip {
    child: Option<Child>,
    dir: PathBuf,
}

/// The phone's password from a rendered `pjsip_operator.conf` (`[<ext>-auth]` … `password=`).
pub fn phone_password(pjsip: &str, ext: &str) -> String {
    let section = pjsip.split(&format!("[{ext}-auth]\n")).nth(1).expect("the phone's auth section");
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("password="))
        .expect("a password line")
        .to_owned()
}

impl Baresip {
    /// Starts baresip listening on `local:5060`, registering `ext` with `password` at
    /// `registrar:5060`, answering calls at once.
    pub fn start(local: Ipv4Addr, registrar: Ipv4Addr, ext: &str, password: &str) -> Baresip {
        let bin = "/usr/bin/baresip";
        assert!(
            std::path::Path::new(bin).exists(),
            "baresip is missing: run `bash testbed/setup.sh` (as root) first"
        );
        let dir = std::env::temp_dir().join(format!("ao-baresip-{}-{ext}-{local}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "poll_method epoll\nsip_listen {local}:5060\nsip_trans_def udp\n\
             audio_player aufile,/dev/null\naudio_source ausine,440\nausrc_srate 48000\nausrc_channels 2\nauplay_srate 48000\nauplay_channels 2\naudio_alert aufile,/dev/null\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule ausine.so\nmodule aufile.so\n\
             module_app account.so\nmodule_app contact.so\nmodule_app menu.so\n"
        );
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:{ext}@{registrar};transport=udp>;auth_pass={password};answermode=auto;regint=60\n"),
        )
        .unwrap();
        std::fs::write(dir.join("contacts"), "").unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        // Line-buffered output, so the log is there when a test prints it.
        let child = Command::new("stdbuf")
            .args(["-oL", "-eL", bin, "-f"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("baresip starts");
        Baresip { child: Some(child), dir }
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// SIGTERM (baresip unregisters on the way out), then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        for _ in 0..100 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
