//! Cache servers run the way a service manager runs them: daemonized, with a pid file,
//! started from a config file (Redis) or an options file (memcached, as Debian's
//! `/etc/memcached.conf`), and a restart script the agent gets as `--restart-command`.
//! The restart script stops the running process (by its pid file), waits for it to go,
//! and starts a new one from the file, so a restart really reads what the agent wrote.
//! Drop kills whatever process the pid file names.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::servers::{free_port, running_as_root, MemcachedClient, RedisClient};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Memcached,
}

pub struct Service {
    kind: Kind,
    port: u16,
    dir: tempfile::TempDir,
}

impl Service {
    /// A daemonized redis-server from `redis.conf` (with `extra` lines appended).
    pub fn redis(extra: &str) -> Service {
        let dir = tempdir("cacheflow-redis-svc-");
        let port = free_port();
        let d = dir.path().display();
        let mut conf = String::new();
        let _ = writeln!(
            conf,
            "# written by the test harness\nport {port}\nbind 127.0.0.1"
        );
        let _ = writeln!(
            conf,
            "dir \"{d}\"\ndaemonize yes\npidfile \"{d}/engine.pid\""
        );
        let _ = writeln!(conf, "logfile \"{d}/engine.log\"\nsave \"\"\nappendonly no");
        conf.push_str(extra);
        fs::write(dir.path().join("redis.conf"), conf).unwrap();
        let start = format!("redis-server \"{d}/redis.conf\"");
        Service::launch(Kind::Redis, port, dir, &start)
    }

    /// A daemonized memcached whose options come from `memcached.conf` (`options`
    /// lines), the port and interface from the start script.
    pub fn memcached(options: &str) -> Service {
        let dir = tempdir("cacheflow-memcached-svc-");
        let port = free_port();
        let d = dir.path().display();
        fs::write(
            dir.path().join("memcached.conf"),
            format!("# memcached options, one per line\n{options}"),
        )
        .unwrap();
        let user = if running_as_root() { "-u root" } else { "" };
        let start = format!(
            "memcached -d -P \"{d}/engine.pid\" -p {port} -U 0 -l 127.0.0.1 {user} \
             $(grep -v '^#' \"{d}/memcached.conf\") 2>>\"{d}/engine.log\""
        );
        Service::launch(Kind::Memcached, port, dir, &start)
    }

    fn launch(kind: Kind, port: u16, dir: tempfile::TempDir, start: &str) -> Service {
        let d = dir.path().display().to_string();
        let script = format!(
            "#!/bin/sh\n# stop the running engine (by its pid file), then start it from its file\n\
             if [ -f \"{d}/engine.pid\" ]; then\n\
             \x20 pid=$(cat \"{d}/engine.pid\")\n\
             \x20 kill \"$pid\" 2>/dev/null || true\n\
             \x20 i=0\n\
             \x20 while kill -0 \"$pid\" 2>/dev/null; do i=$((i+1)); [ $i -gt 400 ] && exit 1; sleep 0.025; done\n\
             \x20 rm -f \"{d}/engine.pid\"\n\
             fi\n\
             {start}\n"
        );
        fs::write(dir.path().join("restart.sh"), script).unwrap();
        let service = Service { kind, port, dir };
        let out = Command::new("sh")
            .arg(service.dir.path().join("restart.sh"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
        assert!(
            out.status.success(),
            "starting {kind:?} failed (is it installed? apt-get install redis-server memcached): {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            service.log()
        );
        service.wait_up(Duration::from_secs(10));
        service
    }

    fn wait_up(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let up = match self.kind {
                Kind::Redis => RedisClient::try_connect(self.port)
                    .and_then(|mut c| c.try_cmd(&["PING"]))
                    .is_ok(),
                Kind::Memcached => MemcachedClient::try_connect(self.port)
                    .and_then(|mut c| c.try_command("version"))
                    .is_ok(),
            };
            if up && self.pid().is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} on port {} did not come up:\n{}",
                self.kind,
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        match self.kind {
            Kind::Redis => self.dir.path().join("redis.conf"),
            Kind::Memcached => self.dir.path().join("memcached.conf"),
        }
    }

    /// The restart command, as an agent would get it.
    pub fn restart_command(&self) -> String {
        format!("sh \"{}\"", self.dir.path().join("restart.sh").display())
    }

    /// The engine's pid, from its pid file.
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.dir.path().join("engine.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    pub fn redis_client(&self) -> RedisClient {
        RedisClient::connect(self.port)
    }

    pub fn memcached_client(&self) -> MemcachedClient {
        MemcachedClient::connect(self.port)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory")
}
