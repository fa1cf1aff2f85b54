//! skiff's own image service beside CRI on the same socket (`skiff.images.v1.Images`): the
//! progress of running pulls, which `skiff image pull` shows while CRI's unary PullImage runs,
//! and imports of image archives (`skiff image import`).

use cri_api::images as pb;
use tonic::{Request, Response, Status};

use super::CriService;
use crate::error::RuntimeError;

#[tonic::async_trait]
impl pb::images_server::Images for CriService {
    async fn pull_progress(
        &self,
        req: Request<pb::PullProgressRequest>,
    ) -> Result<Response<pb::PullProgressResponse>, Status> {
        let image = req.into_inner().image;
        let wanted = (!image.is_empty()).then_some(image.as_str());
        let pulls = self
            .rt
            .images
            .progress(wanted)
            .into_iter()
            .map(|p| pb::PullProgress {
                image: p.image,
                layers_total: p.layers_total,
                layers_done: p.layers_done,
                bytes_total: p.bytes_total,
                bytes_done: p.bytes_done,
            })
            .collect();
        Ok(Response::new(pb::PullProgressResponse { pulls }))
    }

    async fn import(
        &self,
        req: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let req = req.into_inner();
        let path = std::path::PathBuf::from(&req.path);
        if !path.is_absolute() {
            return Err(RuntimeError::InvalidArgument(format!(
                "import {:?}: the archive's path must be absolute",
                req.path
            ))
            .into());
        }
        let imported = self.rt.images.import(&path, &req.base_name).await?;
        let images = imported
            .into_iter()
            .map(|(id, repo_tags)| pb::ImportedImage { id, repo_tags })
            .collect();
        Ok(Response::new(pb::ImportResponse { images }))
    }
}
