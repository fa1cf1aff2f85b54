//! Volume setup on plain directories, with the fake mounter and fake objects.

use super::mounter::FakeMounter;
use super::*;
use crate::objects::FakeObjects;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource,
    ObjectFieldSelector, PodSecurityContext, PodSpec, SecretVolumeSource,
};

struct NoClaims;

impl ClaimResolver for NoClaims {
    fn claim_path<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<PathBuf, String>> {
        Box::pin(async move { Err(format!("persistentvolumeclaim \"{name}\" not found")) })
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    manager: VolumeManager,
    mounter: Arc<FakeMounter>,
    objects: FakeObjects,
    addresses: Addresses,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounter = Arc::new(FakeMounter::default());
        Harness {
            manager: VolumeManager::new(dir.path().join("pods"), mounter.clone()),
            _dir: dir,
            mounter,
            objects: FakeObjects::default(),
            addresses: Addresses {
                pod_ips: vec!["10.88.0.4".into()],
                host_ip: "192.168.0.3".into(),
            },
        }
    }

    fn ctx(&self) -> VolumeContext<'_> {
        VolumeContext {
            objects: &self.objects,
            claims: &NoClaims,
            addresses: &self.addresses,
            allocatable: Allocatable {
                cpu_milli: 2000,
                memory: 1 << 30,
            },
        }
    }
}

fn pod(volumes: Vec<Volume>, mounts: Vec<VolumeMount>) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("web".into());
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some("u1".into());
    p.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
    p.spec = Some(PodSpec {
        containers: vec![Container {
            name: "app".into(),
            volume_mounts: Some(mounts),
            termination_message_path: Some("/dev/termination-log".into()),
            ..Default::default()
        }],
        volumes: Some(volumes),
        ..Default::default()
    });
    p
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn config_maps_secrets_and_downward_api_are_written_and_updated() {
    let h = Harness::new();
    h.objects
        .add_config_map("shop", "app", &[("app.conf", "mode=prod"), ("other", "x")]);
    h.objects
        .add_secret("shop", "db", &[("password", b"s3cret")]);
    let p = pod(
        vec![
            Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: "app".into(),
                    ..Default::default()
                }),
                ..volume("config")
            },
            Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some("db".into()),
                    default_mode: Some(0o400),
                    ..Default::default()
                }),
                ..volume("creds")
            },
            Volume {
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![k8s_openapi::api::core::v1::DownwardAPIVolumeFile {
                        path: "labels".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..volume("info")
            },
        ],
        vec![
            mount("config", "/etc/app"),
            mount("creds", "/secrets"),
            mount("info", "/info"),
        ],
    );
    let mut vols = PodVolumes::default();
    h.manager.setup(&p, h.ctx(), &mut vols).await.unwrap();
    assert!(vols.ready(&p));
    let root = h.manager.pod_dir("u1").join("volumes");
    let cfg = root.join("kubernetes.io~configmap/config");
    assert_eq!(
        std::fs::read_to_string(cfg.join("app.conf")).unwrap(),
        "mode=prod"
    );
    let sec = root.join("kubernetes.io~secret/creds");
    assert_eq!(std::fs::read(sec.join("password")).unwrap(), b"s3cret");
    let mode = std::fs::metadata(sec.join("password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o400);
    assert!(
        h.mounter
            .state()
            .mounted
            .iter()
            .any(|(t, what)| *t == sec && what.starts_with("tmpfs")),
        "secrets live on a tmpfs"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("kubernetes.io~downward-api/info/labels")).unwrap(),
        "app=\"web\""
    );

    let env = Environment::default();
    let (mounts, msg) = h
        .manager
        .container_mounts(&p, &p.spec.as_ref().unwrap().containers[0], &env, &vols)
        .unwrap();
    assert_eq!(mounts.len(), 4);
    assert!(mounts[0].readonly, "configMap volumes are read-only");
    assert_eq!(mounts[3].container_path, "/dev/termination-log");
    assert!(msg.unwrap().exists());

    // The ConfigMap changes: the next pass rewrites the volume.
    h.objects
        .add_config_map("shop", "app", &[("app.conf", "mode=test")]);
    h.manager.setup(&p, h.ctx(), &mut vols).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(cfg.join("app.conf")).unwrap(),
        "mode=test"
    );
    assert!(std::fs::symlink_metadata(cfg.join("other")).is_err());

    // Teardown unmounts the tmpfs and removes the pod's directory.
    h.manager.teardown("u1").unwrap();
    assert!(!h.manager.pod_dir("u1").exists());
    assert!(h.mounter.state().unmounted.contains(&sec));
}

#[tokio::test]
async fn missing_objects_and_keys_fail_the_mount_unless_optional() {
    let h = Harness::new();
    let cm = |optional| Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "app".into(),
            optional,
            items: Some(vec![KeyToPath {
                key: "app.conf".into(),
                path: "app.conf".into(),
                mode: None,
            }]),
            ..Default::default()
        }),
        ..volume("config")
    };
    let p = pod(vec![cm(None)], vec![]);
    let mut vols = PodVolumes::default();
    let e = h.manager.setup(&p, h.ctx(), &mut vols).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap \"app\" not found"
    );
    h.objects.add_config_map("shop", "app", &[("other", "x")]);
    let e = h.manager.setup(&p, h.ctx(), &mut vols).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap references non-existent config key: app.conf"
    );
    let p = pod(vec![cm(Some(true))], vec![]);
    h.manager.setup(&p, h.ctx(), &mut vols).await.unwrap();
}

#[tokio::test]
async fn empty_dirs_host_paths_and_sub_paths() {
    let h = Harness::new();
    let host = h._dir.path().join("host-data");
    let mut p = pod(
        vec![
            Volume {
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..volume("scratch")
            },
            Volume {
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                        "64Mi".into(),
                    )),
                }),
                ..volume("cache")
            },
            Volume {
                host_path: Some(HostPathVolumeSource {
                    path: host.to_string_lossy().into_owned(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..volume("data")
            },
        ],
        vec![
            mount("scratch", "/scratch"),
            VolumeMount {
                sub_path: Some("logs/app".into()),
                ..mount("data", "/logs")
            },
            VolumeMount {
                sub_path_expr: Some("$(POD_NAME)".into()),
                ..mount("scratch", "/mine")
            },
        ],
    );
    p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        fs_group: Some(2000),
        ..Default::default()
    });
    let mut vols = PodVolumes::default();
    h.manager.setup(&p, h.ctx(), &mut vols).await.unwrap();
    assert!(host.is_dir(), "DirectoryOrCreate made the directory");
    let scratch = h
        .manager
        .pod_dir("u1")
        .join("volumes/kubernetes.io~empty-dir/scratch");
    let mode = std::fs::metadata(&scratch).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o7777,
        0o2777,
        "fsGroup makes new files inherit the group"
    );
    assert!(
        h.mounter
            .state()
            .mounted
            .iter()
            .any(|(t, what)| t.ends_with("cache") && what == &format!("tmpfs size={}", 64 << 20))
    );

    let env = Environment {
        vars: vec![("POD_NAME".into(), "web".into())],
    };
    let (mounts, _) = h
        .manager
        .container_mounts(&p, &p.spec.as_ref().unwrap().containers[0], &env, &vols)
        .unwrap();
    assert!(host.join("logs/app").is_dir(), "a missing subPath is made");
    let binds = h.mounter.state().mounted.clone();
    assert!(
        binds
            .iter()
            .any(|(t, src)| t.ends_with("volume-subpaths/data/app/1")
                && src.ends_with("host-data/logs/app")),
        "{binds:?}"
    );
    assert!(
        mounts[2]
            .host_path
            .ends_with("volume-subpaths/scratch/app/2")
    );
    assert!(scratch.join("web").is_dir());

    // A hostPath of the wrong type is a mount failure naming it.
    let file = h._dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad = pod(
        vec![Volume {
            host_path: Some(HostPathVolumeSource {
                path: file.to_string_lossy().into_owned(),
                type_: Some("Directory".into()),
            }),
            ..volume("bad")
        }],
        vec![],
    );
    let e = h
        .manager
        .setup(&bad, h.ctx(), &mut PodVolumes::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("hostPath type check failed")
            && e.to_string().contains("is not a directory"),
        "{e}"
    );
}

#[test]
fn sub_paths_may_not_climb_out() {
    let env = Environment {
        vars: vec![("X".into(), "../../etc".into())],
    };
    let m = |sub: Option<&str>, expr: Option<&str>| VolumeMount {
        sub_path: sub.map(str::to_owned),
        sub_path_expr: expr.map(str::to_owned),
        ..mount("v", "/v")
    };
    assert!(sub_path(&m(Some("../x"), None), &env).is_err());
    assert!(sub_path(&m(Some("/abs"), None), &env).is_err());
    assert!(sub_path(&m(None, Some("$(X)")), &env).is_err());
    assert_eq!(
        sub_path(&m(None, Some("$(MISSING)/x")), &env).unwrap_err(),
        "missing value for MISSING"
    );
    assert_eq!(
        sub_path(&m(Some("a/b"), None), &env).unwrap().as_deref(),
        Some("a/b")
    );
}
