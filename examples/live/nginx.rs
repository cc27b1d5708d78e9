//! nginx as a neutral upstream (a static file per room) and receiver
//! (`return 200`), plus wrk for the ceiling of the same nginx.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use verriflo_relay::room::RoomStatus;

pub struct Nginx {
    pub dir: PathBuf,
    pub upstream: String,
    pub hook: String,
    pub ceiling: String,
    child: Child,
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: the master then stops its workers, which a
    /// killed master leaves running (orphans that outlive the benchmark).
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let asked = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        if !asked {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nginx is missing: run scripts/bench-live.sh, which installs nginx-light and wrk");
}

impl Nginx {
    /// Start nginx in `dir` (readable by its worker). `log_upstream` writes
    /// `$msec $uri` per upstream answer, for the latency run.
    pub fn start(dir: &Path, log_upstream: bool) -> Self {
        use std::os::unix::fs::PermissionsExt;
        // `rooms` is a link to a directory of answers, so that many rooms
        // can change at one instant (see `stage_rooms`).
        std::fs::create_dir_all(dir.join("rooms.0")).unwrap();
        std::os::unix::fs::symlink("rooms.0", dir.join("rooms")).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("rooms.0"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let (up, rx) = (free_port(), free_port());
        let d = dir.display();
        let up_log = if log_upstream {
            format!("access_log {d}/up.log up;")
        } else {
            "access_log off;".into()
        };
        let conf = format!(
            r#"daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  log_format up '$msec $uri';
  log_format hook '$msec $http_webhook_id';
  keepalive_requests 1000000;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{up};
    location ~ ^/v1/room/(?<rid>[^/]+)/status$ {{
      default_type application/json;
      alias {d}/rooms/$rid.json;
      {up_log}
    }}
  }}
  server {{
    listen 127.0.0.1:{rx};
    location /hook {{ access_log {d}/hook.log hook; return 200 'ok'; }}
    location /ceiling {{ return 200 'ok'; }}
  }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx_binary())
            .args(["-c", &format!("{d}/nginx.conf"), "-p", &d.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let nginx = Self {
            dir: dir.to_path_buf(),
            upstream: format!("http://127.0.0.1:{up}"),
            hook: format!("http://127.0.0.1:{rx}/hook"),
            ceiling: format!("http://127.0.0.1:{rx}/ceiling"),
            child,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", rx)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", up)).is_ok()
            {
                return nginx;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("nginx did not come up; see {d}/error.log");
    }

    /// Write a room's answer atomically (a rename), as the upstream would
    /// change it.
    pub fn set_room(&self, status: &RoomStatus) {
        let body = answer(status);
        let path = self
            .dir
            .join("rooms")
            .join(format!("{}.json", status.room_id));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&body).unwrap()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// Stage these rooms' answers for [`Nginx::switch_rooms`], which
    /// changes them all at one instant, as when every class starts at
    /// once: they go to a fresh directory, with the other rooms' files
    /// linked into it. Writing them one by one instead spreads the change
    /// over the writes' own time and takes a core from the relay meanwhile.
    pub fn stage_rooms(&self, statuses: &[RoomStatus]) -> String {
        use std::os::unix::fs::PermissionsExt;
        let current = std::fs::read_link(self.dir.join("rooms")).unwrap();
        let n: u32 = current.to_str().unwrap()["rooms.".len()..].parse().unwrap();
        let next = format!("rooms.{}", n + 1);
        let staged = self.dir.join(&next);
        std::fs::create_dir(&staged).unwrap();
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(self.dir.join(&current)).unwrap() {
            let entry = entry.unwrap();
            std::fs::hard_link(entry.path(), staged.join(entry.file_name())).unwrap();
        }
        for status in statuses {
            let path = staged.join(format!("{}.json", status.room_id));
            let _ = std::fs::remove_file(&path);
            std::fs::write(path, serde_json::to_vec(&answer(status)).unwrap()).unwrap();
        }
        next
    }

    /// Serve the staged answers from now on: one rename swaps the link.
    pub fn switch_rooms(&self, staged: &str) {
        let link = self.dir.join("rooms.link");
        std::os::unix::fs::symlink(staged, &link).unwrap();
        std::fs::rename(link, self.dir.join("rooms")).unwrap();
    }

    /// Lines of an access log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn count_lines(&self, name: &str) -> usize {
        let bytes = std::fs::read(self.dir.join(name)).unwrap_or_default();
        bytecount(&bytes)
    }

    /// wrk's ceiling: POSTs of a 1 KiB body to nginx's do-nothing location.
    pub fn wrk_ceiling(&self, seconds: u64) -> f64 {
        let script = self.dir.join("post.lua");
        let body = "x".repeat(1024);
        std::fs::write(
            &script,
            format!("wrk.method = \"POST\"\nwrk.body = \"{body}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"),
        )
        .unwrap();
        let out = Command::new("wrk")
            .args(["-t2", "-c64", &format!("-d{seconds}s"), "-s"])
            .arg(&script)
            .arg(&self.ceiling)
            .output()
            .expect("wrk is missing: run scripts/bench-live.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

fn bytecount(b: &[u8]) -> usize {
    b.iter().filter(|c| **c == b'\n').count()
}

/// The upstream's answer for a room, as its API wraps it.
fn answer(status: &RoomStatus) -> serde_json::Value {
    json!({"success": true, "message": status.upstream_message(), "data": status})
}
