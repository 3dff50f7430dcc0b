// File uploads with progress (fetch cannot report upload progress; XMLHttpRequest can). The
// body is the file itself, streamed by the browser; the server checks quota and type.
import { ApiError, type Schemas } from './api';

export type Attachment = Schemas['Attachment'];

export function upload(
  ws: string,
  ticket: string,
  file: File,
  options: { commentId?: string; onProgress?: (fraction: number) => void } = {},
): Promise<Attachment> {
  const params = new URLSearchParams({ name: file.name });
  if (options.commentId) params.set('comment_id', options.commentId);
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open('POST', `/api/workspaces/${ws}/tickets/${ticket}/attachments?${params}`);
    request.setRequestHeader('content-type', file.type || 'application/octet-stream');
    request.responseType = 'json';
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) options.onProgress?.(event.loaded / event.total);
    };
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) resolve(request.response as Attachment);
      else reject(new ApiError(request.status, request.response ?? undefined));
    };
    request.onerror = () => reject(new ApiError(0, undefined));
    request.send(file);
  });
}
